"""Shared-stream sweeps: `trainer sweep` (one stream of batches for every run) against `--sequential`.

    .venv/bin/python -m bench.stream                   # loader-bound: linear on ImageNet-sized JPEGs
    .venv/bin/python -m bench.stream --compute         # compute-bound: small_cnn on CIFAR JPEGs
    .venv/bin/python -m bench.stream --device cuda     # the same on a GPU

Each sweep is a KD temperature (x alpha) grid of one student from a cache whose teacher is a random
model (only speed is measured), 1 loader worker, no evaluation. Arms alternate within each round
(shared N, sequential N for each N), medians over rounds. "decode CPU/sample" is the loader workers'
CPU time (reaped children, getrusage) per sample decoded. The physical floor beside each shared arm:
the loader alone over the same epochs (one decode stream), plus preparing the students' input from
each batch once (normalising: runs with the same statistics share it), plus N x the student's own
steps alone on a prepared batch already in memory. The loader worker and the main process run on
different cores, so on 2 cores the sweep can approach max(decode, input + N x steps), also shown.
The loader-bound default is 1,000 images: at 200 images x 2 epochs, fixed costs (process start,
student build, per-epoch checkpoints and plots) were a large share of every arm. Goals: loader-bound
4 runs <= 0.4x sequential, 8 runs <= 0.25x, decode CPU per sample flat within 5%; compute-bound 4 runs
<= 0.85x.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import DATA, cifar10_subset, imagenet_sized_jpegs, machine, softlabels_build, table
from softlabels.runtime import cpu_threads, current_rank, resolve_device
from softlabels.stopping import StopRequest
from trainer import FitConfig, SweepConfig, sweep
from trainer.engine import Inputs, batch_to_device, train_step
from trainer.setup import build_feed, build_run, load_data

GRIDS = {1: ((1.0,), (0.5,)), 4: ((1.0, 2.0, 4.0, 8.0), (0.5,)), 8: ((1.0, 2.0, 4.0, 8.0), (0.5, 0.9))}


def settings(args) -> tuple[str, Path, dict]:
    if args.compute:
        root = cifar10_subset(args.per_class)
        teacher = ("--teacher", "small_cnn", "--num-classes", 10)
        cache = softlabels_build(
            DATA / "bench" / "caches" / f"cifar-{args.per_class}-small_cnn-random.h5",
            *("--dataset", f"imagefolder:{root}", *teacher, "--workers", 1),
        )
        return "small_cnn", cache, {"batch_size": 128}
    root = imagenet_sized_jpegs(args.images)
    cache = softlabels_build(
        DATA / "bench" / "caches" / f"imagenet-sized-{args.images}-v1-linear.h5",
        *("--dataset", f"imagefolder:{root}", "--teacher", "linear", "--num-classes", 10, "--image-size", 224),
        *("--augment", "imagenet", "--workers", 1),
    )
    return "linear", cache, {"batch_size": 64}


def base_config(student: str, cache: Path, out: Path, args, extra: dict) -> FitConfig:
    return FitConfig.from_options(
        cache=str(cache),
        student=student,
        out=str(out),
        epochs=args.epochs,
        workers=1,
        device=args.device,
        eval_dataset="none",
        progress=False,
        overwrite=True,
        **extra,
    )


def timed_sweep(base: FitConfig, runs: int, sequential: bool) -> tuple[float, float]:
    """(wall seconds, loader-worker CPU seconds) of one sweep."""
    temperatures, alphas = GRIDS[runs]
    config = SweepConfig(base, (base.model.student,), temperatures, alphas, sequential=sequential)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    rows = sweep(config)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert all(row["status"] == "ok" for row in rows), rows
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def floor_parts(base: FitConfig) -> tuple[float, float, float]:
    """Seconds over every epoch of: the loader alone (one decode stream), preparing the students' input
    from each batch (normalise; once per batch for runs that share it), and one student's steps alone
    on a prepared batch already in memory."""
    device = resolve_device(base.runtime.device)
    data, teacher, prep = load_data(base)
    feed = build_feed(base, current_rank(), device, data, teacher, prep)
    runtime = base.runtime
    with cpu_threads(device, runtime.workers, runtime.threads):  # the threads the sweep's main process has
        try:
            return _floor_parts(base, device, feed)
        finally:
            feed.close()


def _floor_parts(base: FitConfig, device: torch.device, feed) -> tuple[float, float, float]:
    started = time.perf_counter()
    batch = None
    for epoch in range(base.optim.epochs):
        feed.sampler.set_epoch(epoch)
        for batch in feed.train_loader:  # noqa: B007 (the last one: the students' steps are timed on it)
            pass
    loader = time.perf_counter() - started
    run = build_run(base.replace(out=tempfile.mkdtemp()), current_rank(), device, StopRequest(), feed)
    images, labels, targets = batch_to_device(batch, device)
    steps = run.steps_per_epoch * base.optim.epochs
    spec = run.input_spec
    started = time.perf_counter()
    for _ in range(steps):
        inputs = Inputs(images, device).get(spec, run.normalize)
    prepare = _synced(device, started)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(run, images, labels, targets, inputs)
    return loader, prepare, _synced(device, started)


def _synced(device: torch.device, started: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compute", action="store_true", help="compute-bound: small_cnn on CIFAR JPEGs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=1000, help="ImageNet-sized JPEGs (loader-bound)")
    parser.add_argument("--per-class", type=int, default=50, help="CIFAR images per class (compute-bound)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, nargs="+", default=None)
    args = parser.parse_args()
    counts = args.runs or ([4] if args.compute else [4, 8])
    student, cache, extra = settings(args)
    work = Path(tempfile.mkdtemp())
    base = base_config(student, cache, work / "sweep", args, extra)
    arms = [(n, sequential) for n in counts for sequential in (False, True)]
    wall: dict = {arm: [] for arm in arms}
    decode: dict = {arm: [] for arm in arms}
    floors = []
    loads = [load_average()]
    for round_ in range(args.rounds):
        for arm in arms if round_ % 2 == 0 else arms[::-1]:
            seconds, worker_cpu = timed_sweep(base, *arm)
            wall[arm].append(seconds)
            decode[arm].append(worker_cpu)
        floors.append(floor_parts(base))
        loads.append(load_average())
    loader, prepare, step = (statistics.median(f[i] for f in floors) for i in range(3))
    samples = base.optim.epochs * (args.per_class * 10 if args.compute else args.images)
    rows = []
    for n in counts:
        shared, alone = (statistics.median(wall[(n, s)]) for s in (False, True))
        floor = loader + prepare + n * step
        parallel = max(loader, prepare + n * step)
        per_run_decode = [statistics.median(decode[(n, s)]) / (1 if not s else n) for s in (False, True)]
        rows.append(
            [
                n,
                f"{shared:.1f}",
                f"{alone:.1f}",
                f"**{shared / alone:.2f}x**",
                f"{floor:.1f} ({loader:.1f} + {prepare:.1f} + {n} x {step:.1f})",
                f"{floor / shared:.0%}",
                f"{parallel:.1f}",
                " / ".join(f"{1000 * d / samples:.2f}" for d in per_run_decode),
            ]
        )
    per_round = "; ".join(
        f"{n} runs{' sequential' if alone else ''}: " + " ".join(f"{v:.1f}" for v in wall[(n, alone)])
        for n, alone in arms
    )
    print(f"machine: {machine()}")
    print(
        f"settings: {student}, cache {cache.name}, {base.optim.epochs} epochs, batch {base.optim.batch_size}, "
        f"1 loader worker, device {args.device}, {args.rounds} alternating rounds, medians; "
        f"seconds per round: {per_round}; load average (1, 5, 15 min) before and after each round: "
        f"{' | '.join(loads)}"
    )
    print(
        table(
            [
                "runs",
                "shared stream (s)",
                "--sequential (s)",
                "shared / sequential",
                "floor (s): decode + input + N x steps",
                "floor / shared",
                "bound on 2 cores (s): max(decode, input + N x steps)",
                "decode CPU ms per sample: shared / sequential",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
