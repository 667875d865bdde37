"""Consistent teaching: multi-view caches with replay vs one cached view vs online KD; top-k sizes.

    .venv/bin/python -m bench.views            # the CPU budget stated in the printed settings
    .venv/bin/python -m bench.views --full     # all 50k images, 100 epochs: for a GPU

Teacher cifar_resnet56 (jpegft, ../shared), CIFAR-10 JPEG copy, students small_cnn and
cifar_resnet20, same schedule and seeds in every arm, `cifar` augmentation (crop with 4-pixel
padding + flip) wherever the student sees augmented images. Training results accumulate in
data/bench/views/results.jsonl (rerun to continue).
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import torch

from bench.common import (
    DATA,
    JPEGFT,
    cifar10_jpeg,
    cifar10_subset,
    ensure_cache,
    grid_arguments,
    machine,
    run_grid,
    softlabels_build,
    summarise,
    table,
)
from softlabels.store import Rows, iter_rows, layout_bytes, read_info

BUDGET = {"small_cnn": (500, 200, 10), "cifar_resnet20": (200, 200, 8)}
FULL = {"small_cnn": (5000, 1000, 100), "cifar_resnet20": (5000, 1000, 100)}
LEAN_STUDENTS = ("cifar_resnet20",)


def build(root: Path, name: str, *extra) -> tuple[Path, float]:
    """A cache of the subset (built once) and the teacher-pass seconds it took."""
    started = time.perf_counter()
    path = ensure_cache(root, name, *map(str, extra))
    return path, time.perf_counter() - started


def caches(root: Path, per_class: int) -> dict:
    tag = f"r56ft-{per_class}"
    found = {}
    for key, extra in {
        "v1": (),
        "v4": ("--views", 4, "--augment", "cifar"),
        "v8": ("--views", 8, "--augment", "cifar"),
        "v1-top5": ("--topk", 5),
    }.items():
        found[key] = build(root, f"{tag}-{key}", *extra)
    return found


def student_runs(student, budget, seeds, cached, lean=LEAN_STUDENTS):
    per_class, per_test, epochs = budget
    root = cifar10_jpeg() if per_class >= 5000 else cifar10_subset(per_class, per_test)
    common = ["--epochs", epochs, "--batch-size", 64, "--workers", 0, "--threads", 1]
    aug = ["--augment", "cifar"]
    arms = {
        "ce + aug (labels only)": ["--dataset", f"imagefolder:{root}", "--loss", "ce", *aug],
        "1: cached V=1, no aug": ["--cache", cached["v1"][0]],
        "2: cached V=1 + random aug (inconsistent)": ["--cache", cached["v1"][0], *aug, "--inconsistent-augment"],
        "3: cached V=4, replay": ["--cache", cached["v4"][0]],
        "3: cached V=8, replay": ["--cache", cached["v8"][0]],
        "cached V=1 top-5, no aug": ["--cache", cached["v1-top5"][0]],
        "4: online KD + aug": [
            "--dataset",
            f"imagefolder:{root}",
            "--teacher",
            "cifar_resnet56",
            "--weights",
            JPEGFT,
            *aug,
        ],
    }
    if student in lean:  # the CPU budget: only the five arms the goals are about
        arms = {name: args for name, args in arms.items() if name[0].isdigit()}
    return [(student, arm, seed, [*args, *common]) for seed in seeds for arm, args in arms.items()]


def bytes_rows(cached: dict) -> list[list]:
    rows = []
    for key, (path, seconds) in cached.items():
        info = read_info(path)
        n, v = info.layout.num_samples, info.layout.num_views
        target_bytes = layout_bytes(info.layout)
        rows.append(
            [
                key,
                info.layout.storage + (f" K={info.layout.topk}" if info.layout.topk else ""),
                info.layout.compression,
                v,
                f"{os.path.getsize(path) / (n * v):.1f}",
                f"{target_bytes / (n * v):.1f}",
                f"{seconds:.0f}" if seconds > 1 else "(reused)",
            ]
        )
    return rows


SYNTHETIC = '''
import numpy as np, torch
from PIL import Image

class Synthetic(torch.utils.data.Dataset):
    """1000 classes of 16x16 noise images: only the storage size is measured, not accuracy."""
    classes = [f"class{i:04d}" for i in range(1000)]
    def __init__(self, n=2000):
        self.targets = [i % 1000 for i in range(n)]
    def __len__(self):
        return len(self.targets)
    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)), self.targets[i]

def make(split="train", root=None):
    return Synthetic()
'''


def synthetic_1000_class_rows() -> list[list]:
    """Bytes per view of a 1000-class teacher (synthetic: no real one is at hand) at K=10."""
    folder = DATA / "bench" / "synthetic1000"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.py").write_text(textwrap.dedent(SYNTHETIC))
    rows = []
    for label, extra in {
        "full float16, no aug": (),
        "top-10, no aug": ("--topk", "10"),
        "top-10 + imagenet view params": ("--topk", "10", "--augment", "imagenet", "--views", "2"),
        "top-10 + imagenet params, gzip": (
            "--topk",
            "10",
            "--augment",
            "imagenet",
            "--views",
            "2",
            "--compression",
            "gzip",
        ),
    }.items():
        out = folder / f"{label.replace(' ', '_').replace(',', '')}.h5"
        softlabels_build(
            out,
            *("--dataset", f"{folder / 'data.py'}:make", "--teacher", "linear", "--num-classes", 1000),
            *("--image-size", 16, "--workers", 0, *extra),
            fresh=True,
            quiet=True,
        )
        info = read_info(out)
        n, v = info.layout.num_samples, info.layout.num_views
        target_bytes = layout_bytes(info.layout)
        rows.append([label, v, f"{os.path.getsize(out) / (n * v):.1f}", f"{target_bytes / (n * v):.1f}"])
    return rows


def topk_error_rows(full: Path, topk: Path) -> list[list]:
    """How far top-5 targets rebuilt per docs/FORMAT.md are from the full ones, per temperature."""
    exact, approx = (
        torch.from_numpy(Rows.concat([rows for *_, rows in iter_rows(path)]).dense()) for path in (full, topk)
    )
    rows = []
    for t in (1, 2, 4):
        p, q = torch.log_softmax(exact / t, -1), torch.log_softmax(approx / t, -1)
        kl = (p.exp() * (p - q)).sum(-1)
        tv = 0.5 * (p.exp() - q.exp()).abs().sum(-1)
        rows.append([t, f"{kl.mean():.2e}", f"{kl.max():.2e}", f"{tv.mean():.2e}", f"{tv.max():.2e}"])
    return rows


def main():
    args = grid_arguments(__doc__, BUDGET, seeds=3)
    budgets = FULL if args.full else BUDGET
    lean = () if args.full else LEAN_STUDENTS
    seeds = list(range(args.seeds))
    print(f"machine: {machine()}")
    runs, cache_sets = [], {}
    for student in args.students:
        per_class, per_test, epochs = budgets[student]
        root = cifar10_jpeg() if per_class >= 5000 else cifar10_subset(per_class, per_test)
        cache_sets.setdefault(per_class, caches(root, per_class))
        runs += student_runs(student, budgets[student], seeds, cache_sets[per_class], lean)
        print(
            f"settings {student}: {10 * per_class} train / {10 * per_test} test images, {epochs} epochs, "
            f"SGD one-cycle peak 0.05, batch 64, KD at the trainer's defaults, seeds {seeds}"
        )
    runs.sort(key=lambda run: run[2])  # seed-major: a cut-short run still has every arm at equal seeds
    results = run_grid("views-full" if args.full else "views", runs, fresh=args.fresh)
    arms = list(dict.fromkeys(arm for _, arm, _, _ in runs))
    print(table(["student", "arm", "test accuracy % (mean ± std)", "s/run"], summarise(results, args.students, arms)))
    for per_class, cached in cache_sets.items():
        print(f"\nstorage and teacher-pass cost ({10 * per_class} images, 10 classes):")
        print(
            table(
                ["cache", "storage", "compression", "views", "file bytes/view", "target bytes/view", "teacher pass s"],
                bytes_rows(cached),
            )
        )
        print("\ntop-5 rebuilt targets vs full logits (same views), KL(full || top-5) and total variation:")
        print(
            table(
                ["T", "mean KL", "max KL", "mean TV", "max TV"], topk_error_rows(cached["v1"][0], cached["v1-top5"][0])
            )
        )
    print("\n1000-class synthetic teacher (linear on 16x16 noise, 2,000 samples), storage only:")
    print(table(["storage", "views", "file bytes/view", "target bytes/view"], synthetic_1000_class_rows()))


if __name__ == "__main__":
    main()
