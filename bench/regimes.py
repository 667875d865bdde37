"""Where caches teach best: the regime map (images x epochs x augmentation x views x arm).

    .venv/bin/python -m bench.regimes [--cells 1k-80:imagenet 1k-80:cifar ...] [--arms ...] [--seeds 3]
    .venv/bin/python -m bench.regimes --curve      # accuracy against epochs at (1k, 160)

CIFAR-10 JPEG copy (first N train images per class, the first 200 test images per class), teacher
cifar_resnet56 jpegft (../shared), student small_cnn at the trainer's defaults (KD T=4, alpha 0.9,
clip 2, SGD one-cycle 0.05, batch 64). Arms, all with the same schedule and seeds:
  labels + aug        labels only, random augmentation
  V=1, no aug         a one-view cache, no augmentation (the trainer's default on a V=1 cache)
  V=1 + random aug    a one-view cache with random augmentation (--inconsistent-augment)
  V=k replay          a k-view cache built with the augmentation, replayed exactly
  online KD + aug     the teacher run in the loop on the student's exact augmented view
Augmentations: cifar (pad-4 crop + flip), imagenet (random-resized crop 0.08-1 + flip), randaugment
(crop + flip + RandAugment(2, 9), a torchvision v2 pipeline replayed from one seed per view). Results
accumulate in data/bench/regimes/results.jsonl (rerun to continue; several processes may share it).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

from bench.common import JPEGFT, REPO, cifar10_subset, ensure_cache, machine, mean_spread, run_grid, table

REGIMES = {"1k-80": (100, 80), "5k-30": (500, 30), "5k-15": (500, 15), "10k-10": (1000, 10), "1k-160": (100, 160)}
AUGMENTS = {
    "cifar": "cifar",
    "imagenet": "imagenet",
    "randaugment": f"{REPO / 'bench' / 'strong_augment.py'}:randaugment",
}
ARMS = (
    "labels + aug",
    "V=1, no aug",
    "V=1 + random aug",
    "V=16 replay",
    "V=4 replay",
    "V=64 replay",
    "V=32 replay",
    "online KD + aug",
)
DEFAULT_ARMS = ARMS[:4]


def cache_for(root: Path, per_class: int, views: int, augment: str) -> tuple[Path, float]:
    started = time.perf_counter()
    if views == 1:
        path = ensure_cache(root, f"r56ft-{per_class}-200-v1")
    else:
        path = ensure_cache(
            root, f"r56ft-{per_class}-200-v{views}-{augment}", "--views", str(views), "--augment", AUGMENTS[augment]
        )
    return path, time.perf_counter() - started


def arm_args(arm: str, root: Path, per_class: int, augment: str) -> list:
    aug = ["--augment", AUGMENTS[augment]]
    if arm == "labels + aug":
        return ["--dataset", f"imagefolder:{root}", "--loss", "ce", *aug]
    if arm == "V=1, no aug":
        return ["--cache", cache_for(root, per_class, 1, augment)[0]]
    if arm == "V=1 + random aug":
        return ["--cache", cache_for(root, per_class, 1, augment)[0], *aug, "--inconsistent-augment"]
    if arm.endswith("replay"):
        views = int(arm.split()[0][2:])
        return ["--cache", cache_for(root, per_class, views, augment)[0]]
    return ["--dataset", f"imagefolder:{root}", "--teacher", "cifar_resnet56", "--weights", JPEGFT, *aug]


def runs_for(cells: list[str], arms: list[str], seeds: int) -> list[tuple]:
    runs = []
    for cell in cells:
        regime, augment = cell.split(":")
        per_class, epochs = REGIMES[regime]
        root = cifar10_subset(per_class, 200)
        common = ["--epochs", epochs, "--batch-size", 64, "--workers", 0, "--threads", 1]
        for seed in range(seeds):
            for arm in arms:
                if arm == "V=1, no aug" and augment != "imagenet" and f"{regime}:imagenet" in cells:
                    continue  # the same run for every augmentation: measured once, under imagenet
                runs.append(("small_cnn", f"{cell} {arm}", seed, [*arm_args(arm, root, per_class, augment), *common]))
    return runs


def curve(results_folder: Path) -> list[list]:
    """Test accuracy at epochs 20..160 of the (1k, 160) imagenet runs, per arm (mean over seeds)."""
    rows = []
    for arm in ("V=32 replay", "V=16 replay", "V=1 + random aug", "labels + aug"):
        per_epoch: dict[int, list[float]] = {}
        tag = re.sub(r"[^\w.-]+", "_", f"small_cnn-1k-160:imagenet {arm}-")
        for run in sorted((results_folder / "runs").glob(tag + "*")):
            for line in (run / "metrics.jsonl").read_text().splitlines():
                record = json.loads(line)
                per_epoch.setdefault(record["epoch"], []).append(record["eval_accuracy"])
        cells = [f"{100 * statistics.mean(per_epoch[e]):.1f}" if e in per_epoch else "" for e in (20, 40, 80, 120, 160)]
        if per_epoch:
            rows.append([arm, *cells])
    return rows


def report(cells: list[str], results: list[dict]) -> str:
    """The map: one row per cell, one column per arm (test accuracy %, mean ± std over seeds, s/run), and the gap of
    V=16 replay over V=1 + random aug paired by seed."""
    unique = {(r["arm"], r["seed"]): r for r in results if "accuracy" in r}

    def runs_of(cell: str, arm: str) -> dict[int, dict]:
        key_cell = cell if arm != "V=1, no aug" else cell.split(":")[0] + ":imagenet"
        return {seed: r for (label, seed), r in unique.items() if label == f"{key_cell} {arm}"}

    arms = [arm for arm in ARMS if any(runs_of(cell, arm) for cell in cells)]
    rows = []
    for cell in cells:
        row = [cell]
        for arm in arms:
            hits = list(runs_of(cell, arm).values())
            spread = mean_spread([r["accuracy"] for r in hits]) if hits else ""
            row.append(f"{spread}, {statistics.mean(r['seconds'] for r in hits):.0f} s" if hits else "")
        replay, inconsistent = runs_of(cell, "V=16 replay"), runs_of(cell, "V=1 + random aug")
        gaps = [100 * (replay[s]["accuracy"] - inconsistent[s]["accuracy"]) for s in replay if s in inconsistent]
        row.append(
            f"{statistics.mean(gaps):+.2f} ± {statistics.stdev(gaps):.2f} (n={len(gaps)})" if len(gaps) > 1 else ""
        )
        rows.append(row)
    headers = ["cell", *arms, "V=16 replay - V=1 + random aug (paired by seed)"]
    return table(headers, rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["1k-80:imagenet", "1k-80:cifar"])
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--curve", action="store_true", help="the (1k, 160) imagenet curves instead")
    parser.add_argument("--report", action="store_true", help="print the tables of what has run, run nothing")
    args = parser.parse_args()
    if args.curve:
        args.cells, args.arms = ["1k-160:imagenet"], ["V=32 replay", "V=16 replay", "V=1 + random aug", "labels + aug"]
    folder = REPO / "data" / "bench" / "regimes"
    if args.report:
        results = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    else:
        results = run_grid("regimes", runs_for(args.cells, args.arms, args.seeds))
    print(f"machine: {machine()}")
    print(
        "settings: small_cnn, KD T=4 alpha=0.9 clip 2, SGD one-cycle 0.05, batch 64, 2,000 test images, teacher "
        "cifar_resnet56 jpegft; rows are (train images, epochs):augmentation; entries are test accuracy % "
        "(mean ± std over seeds) and seconds per run"
    )
    print(report(args.cells, results))
    if args.curve:
        print("\naccuracy against epochs at (1k images, 160 epochs), imagenet augmentation, mean over seeds:")
        print(table(["arm", "epoch 20", "40", "80", "120", "160"], curve(folder)))


if __name__ == "__main__":
    main()
