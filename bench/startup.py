"""How long the commands that only read metadata take to answer: `--help`, `info`, `ls`.

    python -m bench.startup [--rounds 7] [--before REV]

Each command runs as a user runs it (a fresh `python -m softlabels ...` process), `--rounds` times,
interleaved with the same command of `--before` (a git revision checked out into a temporary worktree)
when given, and the median wall time is reported. The cache and folder read are tiny ones built here
(reading metadata does not depend on a cache's size). Prints the table BENCHMARKS.md holds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(cache: Path, folder: Path) -> dict[str, list[str]]:
    return {
        "softlabels --help": ["-m", "softlabels", "--help"],
        "trainer --help": ["-m", "trainer", "--help"],
        "softlabels info CACHE": ["-m", "softlabels", "info", str(cache)],
        "softlabels ls FOLDER": ["-m", "softlabels", "ls", str(folder)],
    }


def seconds(tree: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {tree}: {done.stderr.strip().splitlines()[-1]}")
    return took


def make_caches(folder: Path) -> Path:
    """Three tiny caches in `folder`, built by this tree's library."""
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from pathlib import Path
import torch
from conftest import make_image_folder
from softlabels.build import BuildConfig, build_cache
from softlabels.models.registry import create_model
root = make_image_folder(Path({str(folder)!r}) / "images")
(Path({str(folder)!r}) / "caches").mkdir()
torch.manual_seed(0)
torch.save(create_model("small_cnn", 3, 3, 8).state_dict(), Path({str(folder)!r}) / "t.pt")
for i in range(3):
    build_cache(BuildConfig.from_options(dataset=f"imagefolder:{{root}}", teacher="small_cnn",
        weights=str(Path({str(folder)!r}) / "t.pt"), out=str(Path({str(folder)!r}) / "caches" / f"c{{i}}.h5"),
        progress=False, workers=0))
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return folder / "caches"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--before", help="a git revision to compare with (checked out into a temporary worktree)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_caches(Path(tmp))
        trees = {"now": ROOT}
        if args.before:
            old = Path(tmp) / "before"
            subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), args.before], cwd=ROOT, check=True)
            trees["before"] = old
        try:
            runs = {(name, label): [] for name in trees for label in commands(folder / "c0.h5", folder)}
            for _ in range(args.rounds):
                for label, argv in commands(folder / "c0.h5", folder).items():
                    for name, tree in trees.items():
                        runs[(name, label)].append(seconds(tree, argv))
        finally:
            if args.before:
                subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"command: python -m bench.startup --rounds {args.rounds}" + (f" --before {args.before}" if args.before else "")
    )
    print()
    header = "| command | now (s, median) |" + (" before (s) | before / now |" if args.before else "")
    print(header)
    print("| --- | --- |" + (" --- | --- |" if args.before else ""))
    for label in commands(folder / "c0.h5", folder):
        now = statistics.median(runs[("now", label)])
        row = f"| `{label}` | {now:.2f} |"
        if args.before:
            before = statistics.median(runs[("before", label)])
            row += f" {before:.2f} | {before / now:.1f}x |"
        print(row)


if __name__ == "__main__":
    main()
