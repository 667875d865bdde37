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
Embedding arms ("V=16 replay, ce+embed-cosine", "V=1, no aug, kd+embed-cosine, int8", ...): a cached arm
above with a loss named after it, from a cache built with `--targets logits,embedding` (float16
embeddings, or the encoding named last); `kd` there is the logit arm read from the same file. `--report`
adds their table: logits vs embeddings vs both, paired by seed, and int8 against float16.
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
CACHED = ("V=1, no aug", "V=1 + random aug", "V=16 replay", "V=4 replay", "V=64 replay", "V=32 replay")
# What each embedding arm learns from: the logits, the embeddings (with the labels: an embedding loss alone
# trains no classifier), or both; each cached arm can take any of them.
EMBEDDING_LOSSES = ("kd", "ce+embed-cosine", "kd+embed-cosine", "ce+embed-relational")
EMBEDDING_DTYPES = ("float16", "int8", "float32")
EMBEDDING_ARMS = tuple(
    f"{base}, {loss}{suffix}"
    for base in ("V=16 replay", "V=1, no aug")
    for loss in EMBEDDING_LOSSES
    for suffix in ("", ", int8")
)
ARMS = (
    "labels + aug",
    "V=1, no aug",
    "V=1 + random aug",
    "V=16 replay",
    "V=4 replay",
    "V=64 replay",
    "V=32 replay",
    "online KD + aug",
    *EMBEDDING_ARMS,
)
DEFAULT_ARMS = ARMS[:4]


def split_arm(arm: str) -> tuple[str, str | None, str]:
    """(cached arm, loss or None for the trainer's default, embedding encoding) of an arm's name."""
    for base in CACHED:
        if arm.startswith(base + ", "):
            loss, _, dtype = arm[len(base) + 2 :].partition(", ")
            return base, loss, dtype or EMBEDDING_DTYPES[0]
    return arm, None, EMBEDDING_DTYPES[0]


def cache_for(root: Path, per_class: int, views: int, augment: str, embedding: str | None = None) -> tuple[Path, float]:
    """The cell's cache of `views` views; with `embedding` (an encoding) one that also stores embeddings."""
    started = time.perf_counter()
    name, extra = f"r56ft-{per_class}-200-v{views}", []
    if views > 1:
        name, extra = f"{name}-{augment}", ["--views", str(views), "--augment", AUGMENTS[augment]]
    if embedding:
        name += f"-emb-{embedding}"
        extra += ["--targets", "logits,embedding", "--embedding-dtype", embedding]
    return ensure_cache(root, name, *extra), time.perf_counter() - started


def arm_args(arm: str, root: Path, per_class: int, augment: str) -> list:
    aug = ["--augment", AUGMENTS[augment]]
    base, loss, dtype = split_arm(arm)
    if base == "labels + aug":
        return ["--dataset", f"imagefolder:{root}", "--loss", "ce", *aug]
    if base == "online KD + aug":
        return ["--dataset", f"imagefolder:{root}", "--teacher", "cifar_resnet56", "--weights", JPEGFT, *aug]
    views = int(re.match(r"V=(\d+)", base).group(1))
    cache = ["--cache", cache_for(root, per_class, views, augment, dtype if loss else None)[0]]
    extra = ["--loss", loss] if loss else []
    if base == "V=1 + random aug":
        extra += [*aug, "--inconsistent-augment"]
    return [*cache, *extra]


def runs_for(cells: list[str], arms: list[str], seeds: int) -> list[tuple]:
    runs = []
    for cell in cells:
        regime, augment = cell.split(":")
        per_class, epochs = REGIMES[regime]
        root = cifar10_subset(per_class, 200)
        common = ["--epochs", epochs, "--batch-size", 64, "--workers", 0, "--threads", 1]
        for seed in range(seeds):
            for arm in arms:
                if split_arm(arm)[0] == "V=1, no aug" and augment != "imagenet" and f"{regime}:imagenet" in cells:
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


def runs_of(results: list[dict], cell: str, arm: str) -> dict[int, dict]:
    """seed -> result of one arm in one cell (a one-view cache without augmentation is filed under imagenet)."""
    if split_arm(arm)[0] == "V=1, no aug":
        cell = cell.split(":")[0] + ":imagenet"
    return {r["seed"]: r for r in results if "accuracy" in r and r["arm"] == f"{cell} {arm}"}


def entry(hits: dict[int, dict]) -> str:
    """`mean ± std (n), seconds per run` of some runs, or nothing."""
    if not hits:
        return ""
    seconds = statistics.mean(r["seconds"] for r in hits.values())
    return f"{mean_spread([r['accuracy'] for r in hits.values()])}, {seconds:.0f} s"


def paired(better: dict[int, dict], worse: dict[int, dict]) -> str:
    """The mean ± std of the accuracy gap (points) over the seeds both arms ran, or nothing below two."""
    gaps = [100 * (better[s]["accuracy"] - worse[s]["accuracy"]) for s in better if s in worse]
    return f"{statistics.mean(gaps):+.2f} ± {statistics.stdev(gaps):.2f} (n={len(gaps)})" if len(gaps) > 1 else ""


def report(cells: list[str], results: list[dict]) -> str:
    """The map: one row per cell, one column per arm (test accuracy %, mean ± std over seeds, s/run), and the gap of
    V=16 replay over V=1 + random aug paired by seed."""
    arms = [a for a in ARMS if a not in EMBEDDING_ARMS and any(runs_of(results, c, a) for c in cells)]
    if not arms:
        return ""
    rows = []
    for cell in cells:
        row = [cell, *(entry(runs_of(results, cell, arm)) for arm in arms)]
        row.append(paired(runs_of(results, cell, "V=16 replay"), runs_of(results, cell, "V=1 + random aug")))
        rows.append(row)
    headers = ["cell", *arms, "V=16 replay - V=1 + random aug (paired by seed)"]
    return table(headers, rows)


def embedding_report(cells: list[str], results: list[dict]) -> str:
    """Logits vs embeddings vs both: one row per cell and cached arm, one column per loss and each loss's gap
    to `kd` paired by seed; then each other encoding against float16, paired by seed."""
    groups = [
        (cell, base)
        for cell in cells
        for base in CACHED
        if any(runs_of(results, cell, f"{base}, {loss}") for loss in EMBEDDING_LOSSES)
    ]
    losses = [loss for loss in EMBEDDING_LOSSES if any(runs_of(results, c, f"{b}, {loss}") for c, b in groups)]
    if not groups:
        return ""
    rows = []
    for cell, base in groups:
        runs = {loss: runs_of(results, cell, f"{base}, {loss}") for loss in losses}
        rows.append(
            [
                cell,
                base,
                *(entry(runs[loss]) for loss in losses),
                *(paired(runs[loss], runs["kd"]) for loss in losses[1:]),
            ]
        )
    text = table(["cell", "cache", *losses, *(f"{loss} - kd (paired by seed)" for loss in losses[1:])], rows)
    encodings = []
    for cell, base in groups:
        for loss in losses:
            reference = runs_of(results, cell, f"{base}, {loss}")
            for dtype in EMBEDDING_DTYPES[1:]:
                other = runs_of(results, cell, f"{base}, {loss}, {dtype}")
                if other:
                    encodings.append(
                        [cell, f"{base}, {loss}", entry(reference), dtype, entry(other), paired(other, reference)]
                    )
    if encodings:
        headers = ["cell", "arm", "float16 embeddings", "encoding", "accuracy", "- float16 (paired by seed)"]
        text += "\n\n" + table(headers, encodings)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["1k-80:imagenet", "1k-80:cifar"])
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=ARMS, metavar="ARM")
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
    regime_map = report(args.cells, results)
    if regime_map:  # nothing when only embedding arms ran
        print(regime_map)
    embedding = embedding_report(args.cells, results)
    if embedding:
        print("\nlogits vs embeddings vs both, from one cache storing both (teacher embedding: 64-D, float16):")
        print(embedding)
    if args.curve:
        print("\naccuracy against epochs at (1k images, 160 epochs), imagenet augmentation, mean over seeds:")
        print(table(["arm", "epoch 20", "40", "80", "120", "160"], curve(folder)))


if __name__ == "__main__":
    main()
