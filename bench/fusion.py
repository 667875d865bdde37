"""Fusing same-architecture runs: N students' training steps on one batch, one after another (what a
shared-stream sweep does) against one batched computation of all N.

    .venv/bin/python -m bench.fusion

Two fused forms, each with one SGD over the stacked weights (the runs' own settings: momentum 0.9,
Nesterov, weight decay 5e-4): `torch.func` (stack_module_state + functional_call + vmap, any
architecture) and HFTA's (the shared input meets every run's first layer in one op: a linear layer
with N x C outputs, a convolution with N x C channels, then grouped convolutions, one per run).
Students: `linear` on 224 px (batch 64, the loader-bound grid) and `small_cnn` on 32 px (batch 128,
the compute-bound grid), channels_last where the trainer uses it. Milliseconds per step of all N
runs, median of the rounds; 1 thread (the main process of a 1-worker sweep on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bench.common import machine, table
from softlabels.models.zoo import linear, small_cnn

SHAPES = {"linear": (64, 224), "small_cnn": (128, 32)}


def optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)


def students(name: str, n: int) -> list[nn.Module]:
    torch.manual_seed(0)
    if name == "linear":
        return [linear(10, 3, 224) for _ in range(n)]
    return [small_cnn(10, 3, 32).to(memory_format=torch.channels_last) for _ in range(n)]


def batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    size, side = SHAPES[name]
    x = torch.rand(size, 3, side, side)
    return (x if name == "linear" else x.contiguous(memory_format=torch.channels_last)), torch.randint(0, 10, (size,))


def one_by_one(models: list[nn.Module], x, y):
    optimizers = [optimizer(m.parameters()) for m in models]

    def step():
        for model, opt in zip(models, optimizers):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return step


def with_vmap(models: list[nn.Module], x, y):
    params, buffers = stack_module_state(models)
    params = {k: nn.Parameter(v) for k, v in params.items()}
    skeleton = copy.deepcopy(models[0]).to("meta")
    opt = optimizer(params.values())

    def call(p, b, inputs):
        return functional_call(skeleton, (p, b), (inputs,))

    def step():
        logits = vmap(call, in_dims=(0, 0, None), randomness="different")(params, buffers, x)
        loss = sum(nn.functional.cross_entropy(out, y) for out in logits)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def hfta(name: str, models: list[nn.Module], x, y):
    n = len(models)
    stacked = [nn.Parameter(torch.stack([p.detach() for p in ps])) for ps in zip(*(m.parameters() for m in models))]
    opt = optimizer(stacked)

    def forward():
        if name == "linear":
            weight, bias = stacked
            return nn.functional.linear(x.flatten(1), weight.flatten(0, 1), bias.flatten()).view(len(x), n, -1)
        w1, b1, w2, b2, w3, b3 = stacked
        h = nn.functional.conv2d(x, _cl(w1.flatten(0, 1)), b1.flatten(), padding=1)
        h = nn.functional.max_pool2d(h.relu(), 2)
        h = nn.functional.conv2d(h, _cl(w2.flatten(0, 1)), b2.flatten(), padding=1, groups=n)
        h = nn.functional.max_pool2d(h.relu(), 2).reshape(len(x), n, -1)  # each run's features, flattened as alone
        return torch.einsum("bnd,ncd->bnc", h, w3) + b3

    def step():
        logits = forward()
        loss = sum(nn.functional.cross_entropy(logits[:, i], y) for i in range(n))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _cl(weight: torch.Tensor) -> torch.Tensor:
    return weight.contiguous(memory_format=torch.channels_last)


def timed(step, repeats: int) -> float:
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return 1000 * (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in SHAPES:
        x, y = batch(name)
        for n in args.runs:
            arms = {
                "one by one": one_by_one(students(name, n), x, y),
                "torch.func vmap": with_vmap(students(name, n), x, y),
                "HFTA": hfta(name, students(name, n), x, y),
            }
            times: dict[str, list[float]] = {arm: [] for arm in arms}
            for _ in range(args.rounds):
                for arm, step in arms.items():
                    times[arm].append(timed(step, args.repeats))
            alone, vmapped, fused = (statistics.median(times[arm]) for arm in arms)
            shown = [f"{ms:.0f} ({ms / alone:.2f}x)" for ms in (vmapped, fused)]
            rows.append([name, n, f"{alone:.0f}", *shown])
    print(f"machine: {machine()}")
    print(f"settings: 1 thread, {args.rounds} rounds of {args.repeats} steps per arm, medians")
    print(table(["student", "runs", "one by one (ms/step)", "torch.func vmap (ms/step)", "HFTA fused (ms/step)"], rows))


if __name__ == "__main__":
    main()
