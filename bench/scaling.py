"""1 vs 2 processes under torchrun (gloo on CPU): the teacher pass and one training epoch.

    .venv/bin/python -m bench.scaling [--per-class 200]

Two CPU cores say little about GPU scaling: each process gets one core and one intra-op thread, so
this checks that the distributed paths split work without waste, not how 8 GPUs scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import JPEGFT, cifar10_subset, ensure_cache, machine, python, table


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **env})
    return time.perf_counter() - started


def launcher(nproc: int, module: str) -> list[str]:
    if nproc == 1:
        return [python(), "-m", module]
    return [python(), "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", module]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    args = parser.parse_args()
    root = cifar10_subset(args.per_class)
    cache = ensure_cache(root, f"r56ft-{args.per_class}")
    work = Path(tempfile.mkdtemp())
    env = {"OMP_NUM_THREADS": "1"}
    rows = []
    for nproc in (1, 2):
        build = timed(
            [
                *launcher(nproc, "softlabels"),
                "build",
                "--dataset",
                f"imagefolder:{root}",
                "--teacher",
                "cifar_resnet56",
                "--weights",
                str(JPEGFT),
                "--workers",
                "0",
                "--threads",
                "1",
                "--out",
                str(work / f"build{nproc}.h5"),
                "--overwrite",
            ],
            env,
        )
        fit = timed(
            [
                *launcher(nproc, "trainer"),
                "fit",
                "--cache",
                str(cache),
                "--student",
                "cifar_resnet20",
                "--epochs",
                "1",
                "--batch-size",
                str(128 // nproc),
                "--workers",
                "0",
                "--threads",
                "1",
                "--eval-dataset",
                "none",
                "--no-progress",
                "--out",
                str(work / f"fit{nproc}"),
                "--overwrite",
            ],
            env,
        )
        summary = json.loads((work / f"fit{nproc}" / "summary.json").read_text())
        rows.append([nproc, f"{build:.1f}", f"{summary['images_per_second']:.0f}", f"{fit:.1f}"])
    for row in rows[1:]:
        row.append(f"build {float(rows[0][1]) / float(row[1]):.2f}x, fit {float(rows[0][3]) / float(row[3]):.2f}x")
    rows[0].append("1.00x")
    print(f"machine: {machine()}")
    print(
        f"settings: {10 * args.per_class} CIFAR-10 JPEG images; build cifar_resnet56 (jpegft); fit cifar_resnet20 "
        f"1 epoch from the cache, global batch 128; one thread and no loader workers per process; wall times "
        f"include process start-up and (for 2) the merge"
    )
    print(table(["processes", "build wall s", "fit images/s (all ranks)", "fit wall s", "speed-up"], rows))


if __name__ == "__main__":
    main()
