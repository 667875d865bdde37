"""The data path at ImageNet scale: per-sample CPU cost of our views against torchvision's pipeline,
target reads at 1.28M rows, and several views per decode.

    .venv/bin/python -m bench.datapath [--images 300] [--rounds 5] [--rows 1280000]

Part 1 (what one DataLoader worker spends per sample; one thread, no DataLoader): 300 ImageNet-sized
JPEGs (500x375, grain, quality 90, made from the shared CIFAR images), 224 px random-resized crops +
flip. Arms: torchvision v2 (`PILToTensor` -> `RandomResizedCrop(224)` -> flip -> `ToDtype` ->
`Normalize`); our label-only dataset (`--augment imagenet`); our replay of a 4-view `imagenet` cache
(targets in memory; read lazily); R views per decode (R = 1, 2, 4: cost per sample seen). Our arms
hand out float [0, 1] views (normalisation runs batched on the device) — the torchvision arm
normalises per sample, as a user's loader does. Median of rounds, arms interleaved in each round.
Part 2: reading the targets of one random row from synthetic caches of `--rows` rows and 1000
classes (float16 logits V=1: 2.5 GB at 1.28M rows; top-10 V=8; quant8 top-14 V=8; float16 logits V=1
with gzip): plain h5py reads of the row (what a hand-written loader does), against ours in memory and
lazily (memory-mapped where uncompressed), after the first touch of each block (which verifies it). The
files were just written, so they sit in the page cache: a cold disk adds its own latency.
Part 3 (`--accuracy`): does one decode for several views cost accuracy? small_cnn from a 4-view
`cifar` cache of 5,000 CIFAR-10 JPEG images at equal samples seen: 20 epochs at R=1 against 5 epochs
at R=4, 3 seeds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import imagenet_sized_jpegs, machine, table
from softlabels import store
from softlabels.build import BuildConfig, build_cache
from softlabels.data import open_dataset
from softlabels.models.preprocessing import Preprocessing
from softlabels.replay import ReplayDataset
from softlabels.store.files import PARAMS, row_datasets
from softlabels.views import AUGMENTS
from trainer.data import LabelledDataset

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def per_sample(fn, count: int) -> float:
    started = time.perf_counter()
    for i in range(count):
        fn(i)
    return (time.perf_counter() - started) / count * 1e6


def data_arms(root: Path, cache: Path) -> dict:
    from torchvision.transforms import v2

    source = open_dataset(f"imagefolder:{root}")
    torchvision_pipeline = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(224, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(*IMAGENET),
        ]
    )
    labelled = LabelledDataset(source, Preprocessing(*IMAGENET, 224, pixels="uint8"), AUGMENTS["imagenet"], seed=0)
    in_memory = ReplayDataset(source, store.CacheTargets(cache))
    lazy = ReplayDataset(source, store.CacheTargets(cache, memory_budget=0))
    arms = {
        "torchvision v2 (PILToTensor, RandomResizedCrop, flip, ToDtype, Normalize)": lambda i: torchvision_pipeline(
            source.load(i)
        ),
        "ours, labels only (--augment imagenet)": lambda i: labelled[(i, 0, 1)],
        "ours, cached replay, targets in memory": lambda i: in_memory[(i, i % 4, 0)],
        "ours, cached replay, targets read lazily": lambda i: lazy[(i, i % 4, 0)],
    }
    for r in (2, 4):
        arms[f"ours, replay, {r} views per decode (per sample seen)"] = lambda i, r=r: in_memory[
            (i, tuple(range(r)), 0)
        ]
    return arms


def part1(args) -> list[list]:
    root = imagenet_sized_jpegs(args.images)
    cache = Path(tempfile.mkdtemp()) / "v4.h5"
    import warnings

    with warnings.catch_warnings():  # a linear teacher on 224 px views: cheap, and its targets are not the point
        warnings.simplefilter("ignore")
        build_cache(
            BuildConfig.from_options(
                dataset=f"imagefolder:{root}",
                teacher="linear",
                image_size=224,
                views=4,
                augment="imagenet",
                out=str(cache),
                workers=0,
                progress=False,
            )
        )
    arms = data_arms(root, cache)
    divisors = {name: (4 if "4 views" in name else 2 if "2 views" in name else 1) for name in arms}
    timings: dict[str, list[float]] = {name: [] for name in arms}
    torch.set_num_threads(1)
    for _ in range(args.rounds):
        for name, fn in arms.items():
            timings[name].append(per_sample(fn, args.images) / divisors[name])
    base = statistics.median(timings[next(iter(arms))])
    return [[name, f"{statistics.median(t):,.0f}", f"{statistics.median(t) / base:.2f}"] for name, t in timings.items()]


def synthetic(path: Path, rows: int, views: int, storage: str, topk: int | None, compression: str) -> Path:
    layout = store.Layout(
        num_samples=rows,
        num_classes=1000,
        num_views=views,
        storage=storage,
        topk=topk,
        compression=compression,
        block_rows=4096,
    )
    writer = store.CacheWriter.create(path, layout, [str(i) for i in range(rows)], np.zeros(rows), store.Metadata())
    generator = torch.Generator().manual_seed(0)
    for start in range(0, rows, 4096):
        n = min(4096, rows - start)
        writer.write(store.Rows.encode(layout.mode, torch.randn(n, views, 1000, generator=generator) * 3))
    return writer.finish()


def part2(args) -> list[list]:
    import h5py

    folder = Path(tempfile.mkdtemp(dir=Path(__file__).resolve().parents[1] / "data"))
    out = []
    for name, (views, storage, topk, compression) in {
        "float16 logits, V=1": (1, "logits", None, "none"),
        "float16 top-10, V=8": (8, "topk", 10, "none"),
        "quant8 top-14, V=8": (8, "quant8", 14, "none"),
        "float16 logits, V=1, gzip": (1, "logits", None, "gzip"),
    }.items():
        path = synthetic(folder / f"{storage}-{views}-{compression}.h5", args.rows, views, storage, topk, compression)
        size = path.stat().st_size
        order = [int(i) for i in np.random.default_rng(0).integers(0, args.rows, 2000)]
        cells = [name, f"{size / 2**30:.2f} GiB"]
        with h5py.File(path, "r") as file:  # what a user's own loader would do: one h5py read per row
            datasets = [file[n] for n in row_datasets(store.read_info(path).layout) if n != PARAMS]
            cells.append(f"{per_sample(lambda i, o=order, ds=datasets: [d[o[i]] for d in ds], len(order)):,.1f}")
        for budget in (size + (1 << 30), 0):
            if budget and budget > 12 << 30:
                cells.append("n/a")
                continue
            targets = store.CacheTargets(path, memory_budget=budget)
            for row in order:  # first touch: loads, or verifies the rows' blocks (once per block, per cache)
                targets.logits(row, 0)
            cells.append(f"{per_sample(lambda i, t=targets, o=order: t.logits(o[i], 0), len(order)):,.1f}")
            targets.close()
        out.append(cells)
        path.unlink()
    return out


def accuracy() -> None:
    from bench.common import cifar10_subset, ensure_cache, run_grid, summarise

    root = cifar10_subset(500, 200)
    cache = ensure_cache(root, "r56ft-500-200-v4-cifar", "--views", "4", "--augment", "cifar")
    common = ["--cache", cache, "--batch-size", 64, "--workers", 0, "--threads", 1]
    arms = {
        "R=1, 20 epochs": ["--epochs", 20],
        "R=4, 5 epochs (equal samples seen)": ["--epochs", 5, "--views-per-decode", 4],
    }
    runs = [("small_cnn", arm, seed, [*common, *extra]) for seed in range(3) for arm, extra in arms.items()]
    results = run_grid("views-per-decode", runs)
    print(f"machine: {machine()}")
    print(
        "settings: small_cnn, 5,000 CIFAR-10 JPEG train / 2,000 test images, a 4-view cifar cache of the jpegft "
        "resnet56, KD at the defaults, batch 64 (R=4: 16 images x 4 views), 100,000 samples seen, seeds 0-2"
    )
    print(
        table(
            ["student", "views per decode", "test accuracy % (mean ± std)", "s/run"],
            summarise(results, ["small_cnn"], list(arms)),
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_280_000)
    parser.add_argument("--skip-reads", action="store_true", help="part 1 only")
    parser.add_argument("--accuracy", action="store_true", help="part 3 only")
    args = parser.parse_args()
    if args.accuracy:
        return accuracy()
    print(f"machine: {machine()}")
    print(
        f"settings: {args.images} JPEGs 500x375 (q90), 224 px random-resized crop + flip, one thread, no "
        f"DataLoader, median of {args.rounds} interleaved rounds"
    )
    print(table(["data path", "µs/sample", "vs torchvision"], part1(args)))
    if not args.skip_reads:
        print(
            f"\ntarget reads of one random row (dense float32 logits of one view), {args.rows:,} rows x 1000 "
            f"classes, 2,000 random rows, one thread:"
        )
        print(
            table(
                ["cache", "file size", "plain h5py, µs/row", "ours in memory, µs/row", "ours lazily, µs/row"],
                part2(args),
            )
        )


if __name__ == "__main__":
    main()
