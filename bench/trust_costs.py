"""What trusting the data costs (issue 16): sample digests against the teacher pass and against a
training loader's per-sample time, and block-checksum checks when the trainer reads a cache (all at
once into memory, and per block on first touch when read lazily).

    .venv/bin/python -m bench.trust_costs [--rounds 5] [--rows 20000]

Digests: SHA-256 of each sample's source bytes (file bytes for image folders; decoded pixels for
built-ins and FILE.py:FUNC datasets, measured on a CIFAR-shaped uint8 factory), timed on their own
(files in the page cache, as in a build's steady state) and divided by the per-sample time of a real
`softlabels build` of the same images (cifar_resnet56 at 32 px; ResNet-18 at 224 px, random weights:
only its cost matters) and of the trainer's `ReplayDataset[i]` (decode, replayed view, targets).
Checksums: a synthetic cache of ROWS x 1000 float16 logits (ImageNet-shaped rows), `CacheTargets`
with `verify` on and off, in memory and lazily (a shuffled pass over every row, as an epoch reads it).
Arms alternate round by round so drift on a shared machine hits both; medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.common import JPEGFT, cifar10_subset, imagenet_sized_jpegs, machine, table
from softlabels import store
from softlabels.build import BuildConfig, build_cache
from softlabels.data import open_dataset
from softlabels.replay import ReplayDataset

FACTORY = """
import numpy as np
import torch

class Arrays(torch.utils.data.Dataset):
    classes = [str(c) for c in range(10)]

    def __init__(self, n=2000):
        self.data = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data[i], self.targets[i]

def make(split, root):
    return Arrays()
"""


def median_seconds(function, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def digest_seconds(source, rounds: int) -> float:
    """Seconds per sample of `source.digest` (a warm-up pass first: files in the page cache)."""
    indices = range(len(source))
    for i in indices:
        source.digest(i)
    return median_seconds(lambda: [source.digest(i) for i in indices], rounds) / len(source)


def build_seconds(spec: str, teacher: str, weights: str | None, out: Path, image_size: int | None) -> float:
    """Seconds per sample of a real build (teacher pass, writing, final re-verification)."""
    config = BuildConfig.from_options(
        dataset=spec, teacher=teacher, weights=weights, out=str(out), overwrite=True, batch_size=64,
        image_size=image_size, progress=False, device="cpu",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a teacher with random weights: only its cost matters here
        result = build_cache(config)
    return result.seconds / result.num_samples


def loader_seconds(source, cache: Path, check: bool, rounds: int) -> float:
    """Seconds per sample of the trainer's dataset item with the content check on or off."""
    dataset = ReplayDataset(source, store.CacheTargets(cache), check_content=check)
    items = [(i, 0, 0) for i in range(len(dataset))]
    for item in items[:50]:
        dataset[item]
    return median_seconds(lambda: [dataset[item] for item in items], rounds) / len(items)


def digest_rows(rounds: int, tmp: Path) -> list[list]:
    factory = tmp / "arrays.py"
    factory.write_text(FACTORY)
    arms = [
        ("CIFAR-10 JPEGs, 32 px (2,000)", f"imagefolder:{cifar10_subset(200, 40)}", "cifar_resnet56", JPEGFT, None),
        ("ImageNet-sized JPEGs, 224 px (300)", f"imagefolder:{imagenet_sized_jpegs(300)}", "torchvision:resnet18",
         None, 224),
        ("decoded uint8 arrays, 32 px (2,000; as built-ins)", f"{factory}:make", "cifar_resnet56", JPEGFT, None),
    ]  # fmt: skip
    rows = []
    for name, spec, teacher, weights, size in arms:
        source = open_dataset(spec)
        cache = tmp / f"{len(rows)}.h5"
        weights = str(weights) if weights and Path(weights).exists() else None
        per_build = build_seconds(spec, teacher, weights, cache, size)
        per_digest = digest_seconds(source, rounds)
        off, on = [], []
        for _ in range(rounds):  # alternate the arms
            off.append(loader_seconds(source, cache, False, 1))
            on.append(loader_seconds(source, cache, True, 1))
        per_off, per_on = statistics.median(off), statistics.median(on)
        rows.append(
            [
                name,
                source.digest_source,
                f"{per_digest * 1e6:.1f}",
                f"{per_build * 1e3:.2f}",
                f"{per_digest / per_build:.2%}",
                f"{per_off * 1e6:.0f}",
                f"{per_on * 1e6:.0f}",
                f"{per_digest / per_off:.1%} ({(per_on - per_off) / per_off:+.1%})",
            ]
        )
        print(rows[-1], flush=True)
    return rows


def synthetic_cache(path: Path, rows: int, classes: int = 1000) -> Path:
    layout = store.Layout(num_samples=rows, num_classes=classes, dtype="float16", block_rows=1024)
    keys = [f"n{i:07d}.JPEG" for i in range(rows)]
    labels = np.arange(rows) % classes
    meta = store.Metadata(dataset=store.DatasetRecord(fingerprint=store.dataset_fingerprint(keys, labels)))
    writer = store.CacheWriter.create(path, layout, keys, labels, meta)
    generator = torch.Generator().manual_seed(0)
    for start in range(0, rows, 1024):
        logits = torch.randn(min(1024, rows - start), 1, classes, generator=generator) * 4
        writer.write(store.Rows.encode(layout.mode, logits))
    writer.finish()
    return path


def checksum_rows(rounds: int, rows: int, tmp: Path) -> list[list]:
    path = synthetic_cache(tmp / "synthetic.h5", rows)
    megabytes = store.layout_bytes(store.read_info(path).layout) / 2**20
    loads = {False: [], True: []}
    for _ in range(rounds):
        for verify in (False, True):
            loads[verify].append(median_seconds(lambda v=verify: store.CacheTargets(path, verify=v), 1))
    order = np.random.default_rng(0).permutation(rows).tolist()

    def lazy_pass(verify: bool) -> float:
        targets = store.CacheTargets(path, memory_budget=0, verify=verify)
        started = time.perf_counter()
        for i in order:
            targets.rows(i)
        return (time.perf_counter() - started) / rows

    lazy = {False: [], True: []}
    for _ in range(rounds):
        for verify in (False, True):
            lazy[verify].append(lazy_pass(verify))
    off, on = statistics.median(loads[False]), statistics.median(loads[True])
    lazy_off, lazy_on = statistics.median(lazy[False]), statistics.median(lazy[True])
    return [
        [
            f"in memory ({megabytes:.0f} MiB, {rows} x 1000 float16)",
            f"{off:.3f} s",
            f"{on:.3f} s",
            f"+{on - off:.3f} s ({megabytes / max(on - off, 1e-9):.0f} MiB/s checked)",
        ],
        [
            "lazily, first epoch (shuffled, one row at a time)",
            f"{lazy_off * 1e6:.0f} us/row",
            f"{lazy_on * 1e6:.0f} us/row",
            f"{(lazy_on - lazy_off) * 1e6:+.0f} us/row ({(lazy_on - lazy_off) / lazy_off:+.1%})",
        ],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--skip-digests", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(machine())
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if not args.skip_digests:
            header = [
                "data",
                "digest of",
                "digest us/sample",
                "build ms/sample",
                "digest / build",
                "loader us/sample, check off",
                "on",
                "digest / loader (measured on-off)",
            ]
            print(table(header, digest_rows(args.rounds, tmp)))
        header = ["cache read", "verify off", "verify on", "cost of the checks"]
        print(table(header, checksum_rows(args.rounds, args.rows, tmp)))


if __name__ == "__main__":
    main()
