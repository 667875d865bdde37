"""Label-free: a student distilled from an unlabelled cache (labels withheld) against students trained
with labels on fewer or as many images, and against KD with labels, on CIFAR-10.

    .venv/bin/python -m bench.label_free                 # the CPU budget stated in the printed settings
    .venv/bin/python -m bench.label_free --pool 50000    # every training image in the pool

The pool is a seeded random sample of `cifar10-jpeg/train`. The unlabelled arm sees it as a flat
folder of images renamed by a shuffled index (no class in any path), cached by the shared jpegft
resnet56 and learnt with `--loss kd --alpha 1` (the teacher's soft targets alone); its accuracy comes
from `--eval-dataset`. The labelled arms: cross-entropy on the first 1k / 5k / all images of the
pool, and KD with the default label term on the pool's labelled cache. Test: the first 200 images
per class of `cifar10-jpeg/test`. Same student, schedule and seeds for every arm, no augmentation.
Results accumulate in data/bench/label_free-<pool>/results.jsonl (rerun to continue; --fresh to restart).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np

from bench.common import DATA, JPEGFT, cifar10_jpeg, machine, run_grid, softlabels_build, summarise, table

TEST_PER_CLASS = 200
SUBSETS = (1000, 5000)


def pool_images(pool: int, seed: int = 0) -> list[tuple[Path, str]]:
    """(image, class) of a seeded random sample of `pool` training images, in sample order."""
    train = cifar10_jpeg() / "train"
    images = [(image, d.name) for d in sorted(train.iterdir()) for image in sorted(d.iterdir())]
    order = np.random.default_rng(seed).permutation(len(images))[:pool]
    return [images[i] for i in order]


def _replace_into(staging: Path, target: Path) -> Path:
    os.replace(staging, target)
    return target


def labelled_folder(images: list[tuple[Path, str]], name: str) -> Path:
    """train/<class>/<image> (symlinks) of `images`, and test/ with the first images of each class."""
    target = DATA / "bench" / "label_free" / name
    if target.exists():
        return target
    staging = Path(str(target) + ".making")
    shutil.rmtree(staging, ignore_errors=True)
    for image, label in images:
        out = staging / "train" / label
        out.mkdir(parents=True, exist_ok=True)
        (out / image.name).symlink_to(image.resolve())
    for class_dir in sorted((cifar10_jpeg() / "test").iterdir()):
        out = staging / "test" / class_dir.name
        out.mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:TEST_PER_CLASS]:
            (out / image.name).symlink_to(image.resolve())
    return _replace_into(staging, target)


def unlabelled_folder(images: list[tuple[Path, str]], name: str) -> Path:
    """A flat folder of `images` named 00000.jpg, 00001.jpg, ... in (shuffled) sample order."""
    target = DATA / "bench" / "label_free" / name
    if target.exists():
        return target
    staging = Path(str(target) + ".making")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for index, (image, _) in enumerate(images):
        (staging / f"{index:05d}.jpg").symlink_to(image.resolve())
    return _replace_into(staging, target)


def caches(pool: int) -> tuple[Path, Path, Path]:
    """(labelled pool folder, unlabelled cache, labelled cache) of the pool."""
    images = pool_images(pool)
    labelled = labelled_folder(images, f"labelled-{pool}")
    flat = unlabelled_folder(images, f"unlabelled-{pool}")
    teacher = ["--teacher", "cifar_resnet56", "--weights", JPEGFT, "--num-classes", 10, "--workers", 1]
    folder = DATA / "bench" / "caches"
    unlabelled = softlabels_build(folder / f"r56ft-unlabelled-{pool}.h5", "--dataset", f"imagefolder:{flat}", *teacher)
    cache = softlabels_build(folder / f"r56ft-labelled-{pool}.h5", "--dataset", f"imagefolder:{labelled}", *teacher)
    return labelled, unlabelled, cache


def runs(pool: int, epochs: int, seeds: list[int], student: str) -> tuple[list[tuple], list[str]]:
    labelled, unlabelled, cache = caches(pool)
    images = pool_images(pool)
    common = ["--epochs", epochs, "--batch-size", 64, "--workers", 1, "--threads", 1]
    arms = {
        f"kd, unlabelled cache of {pool} (alpha 1)": [
            "--cache",
            unlabelled,
            "--loss",
            "kd",
            "--alpha",
            1,
            "--eval-dataset",
            f"imagefolder:{labelled}",
        ],
        f"kd with labels, cache of {pool} (defaults)": ["--cache", cache, "--loss", "kd"],
    }
    for size in (*(s for s in SUBSETS if s < pool), pool):
        folder = labelled if size == pool else labelled_folder(images[:size], f"labelled-{size}")
        arms[f"ce, {size} labelled images"] = ["--dataset", f"imagefolder:{folder}", "--loss", "ce"]
    grid = [(student, arm, seed, [*args, *common]) for seed in seeds for arm, args in arms.items()]
    return grid, list(arms)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=10000, help="training images in the pool")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--student", default="small_cnn")
    parser.add_argument("--prepare", action="store_true", help="only make the folders and caches")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results and start again")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"settings: pool {args.pool}, {args.epochs} epochs, {args.seeds} seeds, student {args.student}")
    grid, arms = runs(args.pool, args.epochs, list(range(args.seeds)), args.student)
    if args.prepare:
        return
    results = run_grid(f"label_free-{args.pool}", grid, fresh=args.fresh)
    print(table(["student", "arm", "test accuracy (%)", "seconds/run"], summarise(results, [args.student], arms)))


if __name__ == "__main__":
    main()
