"""`softlabels build` against the bare teacher forward loop over the same DataLoader.

    .venv/bin/python bench/build_throughput.py [--per-class 300] [--rounds 2] [--full]

Prints the table for BENCHMARKS.md: images/s of both, and build / bare (goal >= 0.95).
Arms alternate (bare, build, bare, build, ...) so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import JPEGFT, cifar10_jpeg, cifar10_subset, machine, table
from softlabels.build import BuildConfig, TeacherInputs, build_cache, load_build_teacher, make_loader
from softlabels.datasets import open_dataset
from softlabels.pipeline import Normalize, ViewPipeline
from softlabels.runtime import autocast, cpu_threads, prepare_model, resolve_device


def bare_forward(config: BuildConfig) -> float:
    """Images/s of the teacher alone: same dataset, loader, device placement; logits fetched to host."""
    device = resolve_device(config.runtime.device)
    source = open_dataset(config.data.dataset, config.data.split)
    teacher = load_build_teacher(config, source)
    model = prepare_model(teacher.model, device).eval()
    normalize = Normalize(teacher.input).to(device)
    loader = make_loader(TeacherInputs(source, ViewPipeline(teacher.input), 1, 0), range(len(source)), config, device)
    started = time.perf_counter()
    with torch.inference_mode(), cpu_threads(device, config.runtime.workers, config.runtime.threads):  # as the build
        for _, views, _ in loader:
            images = views.flatten(0, 1).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with autocast(device, config.model.amp):
                model(normalize(images)).float().cpu()
    return len(source) / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=300, help="training images per class (of 5000)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--full", action="store_true", help="all 50,000 training images")
    args = parser.parse_args()
    root = cifar10_jpeg() if args.full else cifar10_subset(args.per_class)
    out = Path(tempfile.mkdtemp()) / "bench.h5"
    config = BuildConfig.from_options(
        dataset=f"imagefolder:{root}",
        teacher="cifar_resnet56",
        weights=str(JPEGFT),
        out=str(out),
        batch_size=args.batch_size,
        overwrite=True,
        progress=False,
        **({"workers": args.workers} if args.workers is not None else {}),
    )
    bare, built = [], []
    for _ in range(args.rounds):
        bare.append(bare_forward(config))
        result = build_cache(config)
        built.append(result.images_per_second)
    n = result.num_samples
    ratio = statistics.median(built) / statistics.median(bare)
    print(f"machine: {machine()}")
    print(
        f"settings: cifar_resnet56 (jpegft), {n} CIFAR-10 JPEG train images, batch {config.runtime.batch_size}, "
        f"{config.runtime.workers} workers, float16 storage, {args.rounds} alternating rounds, median"
    )
    print(
        table(
            ["arm", "images/s (median)", "runs", "ratio"],
            [
                ["bare teacher forward", f"{statistics.median(bare):.0f}", ", ".join(f"{v:.0f}" for v in bare), "1.00"],
                [
                    "softlabels build",
                    f"{statistics.median(built):.0f}",
                    ", ".join(f"{v:.0f}" for v in built),
                    f"{ratio:.3f}",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
