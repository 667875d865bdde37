"""Training speed: labels only vs cached KD vs online KD, one student, one loader, in one run.

    .venv/bin/python -m bench.train_throughput [--per-class 200] [--epochs 2] [--rounds 2]

Each arm runs as its own `trainer fit` process (so peak RSS is its own), in alternating order.
Goal: cached KD takes <= 1.05 x the time of label-only training.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import JPEGFT, cifar10_subset, ensure_cache, fit, machine, table

STUDENTS = ("small_cnn", "cifar_resnet20")


def arms(root: Path, cache: Path) -> dict[str, list[str]]:
    return {
        "labels only (ce)": ["--dataset", f"imagefolder:{root}", "--loss", "ce"],
        "cached KD": ["--cache", str(cache), "--loss", "kd"],
        "online KD": [
            "--dataset",
            f"imagefolder:{root}",
            "--teacher",
            "cifar_resnet56",
            "--weights",
            str(JPEGFT),
            "--loss",
            "kd",
        ],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    args = parser.parse_args()
    root = cifar10_subset(args.per_class)
    cache = ensure_cache(root, f"r56ft-{args.per_class}")
    work = Path(tempfile.mkdtemp())
    common = ["--epochs", args.epochs, "--eval-dataset", "none", "--workers", args.workers, "--batch-size", 128]
    rows = []
    for student in args.students:
        speed = {name: [] for name in arms(root, cache)}
        rss = {}
        for round_ in range(args.rounds):
            order = list(arms(root, cache).items())
            for name, arm_args in order if round_ % 2 == 0 else order[::-1]:
                summary = fit(work / "run", "--student", student, *arm_args, *common)
                speed[name].append(summary["images_per_second"])
                rss[name] = summary["peak_rss_mb"]
        base = statistics.median(speed["labels only (ce)"])
        cached = statistics.median(speed["cached KD"])
        for name, values in speed.items():
            median = statistics.median(values)
            rows.append(
                [
                    student,
                    name,
                    f"{median:.0f}",
                    ", ".join(f"{v:.0f}" for v in values),
                    f"{base / median:.2f}",
                    f"{rss[name]:.0f}",
                    f"{cached / median:.2f}" if name == "online KD" else "",
                ]
            )
    print(f"machine: {machine()}")
    print(
        f"settings: {10 * args.per_class} CIFAR-10 JPEG train images, {args.epochs} epochs, batch 128, "
        f"{args.workers} worker(s), no evaluation, {args.rounds} alternating rounds, median; "
        f"teacher cifar_resnet56 (jpegft)"
    )
    print(
        table(
            ["student", "arm", "images/s", "runs", "time vs labels only", "peak RSS MB", "online / cached time"], rows
        )
    )


if __name__ == "__main__":
    main()
