"""Training speed: labels only vs cached KD vs online KD, one student, one loader, in one run.

    .venv/bin/python -m bench.train_throughput [--per-class 200] [--epochs 2] [--rounds 2]
    .venv/bin/python -m bench.train_throughput --imagenet [--workers 2] [--device cuda]

`--imagenet` is the loader-bound setting: a tiny student (`linear`) on ImageNet-sized JPEGs (500x375,
made from the shared CIFAR images), 224 px random-resized crops, 2 loader workers: labels only
(`--augment imagenet`) against a 4-view `imagenet` cache replayed (R=1) and 4 views per decode (R=4;
speed per sample seen). The cache's teacher is a random `linear` model: only speed is measured.

Each arm runs as its own `trainer fit` process (so peak RSS is its own), in alternating order.
Goal: cached KD takes <= 1.05 x the time of label-only training.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import (
    DATA,
    JPEGFT,
    cifar10_subset,
    ensure_cache,
    fit,
    imagenet_sized_jpegs,
    machine,
    softlabels_build,
    table,
)

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


def imagenet_cache(root: Path) -> Path:
    return softlabels_build(
        DATA / "bench" / "caches" / "imagenet-sized-v4-linear.h5",
        *("--dataset", f"imagefolder:{root}", "--teacher", "linear", "--num-classes", 10, "--image-size", 224),
        *("--views", 4, "--augment", "imagenet"),
    )


def imagenet_main(args) -> None:
    root = imagenet_sized_jpegs(300)
    cache = imagenet_cache(root)
    work = Path(tempfile.mkdtemp())
    common = ["--eval-dataset", "none", "--workers", args.workers, "--batch-size", 64, "--device", args.device]
    arms = {
        "labels only (ce, --augment imagenet)": [
            "--dataset",
            f"imagefolder:{root}",
            "--loss",
            "ce",
            "--augment",
            "imagenet",
            "--image-size",
            224,
            "--epochs",
            args.epochs * 4,
        ],
        "cached KD, 4-view replay": ["--cache", cache, "--epochs", args.epochs * 4],
        "cached KD, 4 views per decode": ["--cache", cache, "--views-per-decode", 4, "--epochs", args.epochs],
    }
    speed: dict[str, list[float]] = {name: [] for name in arms}
    for round_ in range(args.rounds):
        order = list(arms.items())
        for name, arm_args in order if round_ % 2 == 0 else order[::-1]:
            speed[name].append(fit(work / "run", "--student", "linear", *arm_args, *common)["images_per_second"])
    base = statistics.median(speed["labels only (ce, --augment imagenet)"])
    rows = [
        [name, f"{statistics.median(v):.0f}", ", ".join(f"{x:.0f}" for x in v), f"{base / statistics.median(v):.2f}"]
        for name, v in speed.items()
    ]
    print(f"machine: {machine()}")
    print(
        f"settings: student linear, 300 ImageNet-sized JPEGs (500x375), 224 px, batch 64, {args.workers} loader "
        f"workers, device {args.device}, 1,200 samples seen per run, {args.rounds} alternating rounds, median"
    )
    print(table(["arm", "samples seen/s", "runs", "time per sample seen vs labels only"], rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenet", action="store_true", help="the loader-bound setting (see above)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--students", nargs="+", default=list(STUDENTS))
    args = parser.parse_args()
    if args.imagenet:
        args.workers = 2 if args.workers == 1 else args.workers
        args.epochs = 1 if args.epochs == 2 else args.epochs
        return imagenet_main(args)
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
