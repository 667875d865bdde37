"""Shared by the benchmarks: real data from ../shared, machine description, table printing."""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import tarfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOFTLABELS_SHARED", REPO.parent / "shared"))
DATA = REPO / "data"
TEACHERS = SHARED / "teachers"
JPEGFT = TEACHERS / "cifar_resnet56-jpegft.pt"


def cifar10_jpeg() -> Path:
    """The JPEG copy of CIFAR-10 from ../shared, unpacked once into data/cifar10-jpeg."""
    target = DATA / "cifar10-jpeg"
    if (target / "train").is_dir() and (target / "test").is_dir():
        return target
    archive = SHARED / "datasets" / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        raise SystemExit(f"benchmark data missing: {archive} (see ../shared/README.md)")
    staging = DATA / "cifar10-jpeg.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    os.replace(staging, target)
    return target


def cifar10_subset(per_class_train: int, per_class_test: int | None = None) -> Path:
    """data/bench/cifar10-<n>: the first n images of each class (symlinks), train/ and test/."""
    full = cifar10_jpeg()
    per_class_test = per_class_test or max(1, per_class_train // 5)
    target = DATA / "bench" / f"cifar10-{per_class_train}-{per_class_test}"
    if target.exists():
        return target
    staging = Path(str(target) + ".making")
    shutil.rmtree(staging, ignore_errors=True)
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for class_dir in sorted((full / split).iterdir()):
            out = staging / split / class_dir.name
            out.mkdir(parents=True)
            for image in sorted(class_dir.iterdir())[:count]:
                (out / image.name).symlink_to(image.resolve())
    os.replace(staging, target)
    return target


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_spread(values: list[float]) -> str:
    """`mean ± sample std (n)` in percentage points for accuracies in [0, 1]."""
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (n=1)"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f} (n={len(values)})"


def python() -> str:
    import sys

    return sys.executable


def softlabels_build(out: Path, *args, fresh: bool = False, quiet: bool = False) -> Path:
    """`python -m softlabels build ARGS --out OUT` in its own process: resumed and reused once complete,
    or rebuilt from scratch with `fresh`. Two benchmark processes that need one cache build it once: the
    second waits for the first."""
    import fcntl
    import subprocess

    if out.exists() and not fresh:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".bench-lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists() and not fresh:
            return out
        command = [python(), "-m", "softlabels", "build", *map(str, args), "--out", str(out)]
        subprocess.run([*command, "--overwrite" if fresh else "--resume"], check=True, capture_output=quiet)
    return out


def ensure_cache(root: Path, name: str, *extra: str) -> Path:
    """A cache of `root`'s train split by the shared jpegft resnet56, built once (reused across runs)."""
    teacher = ["--teacher", "cifar_resnet56", "--weights", JPEGFT]
    return softlabels_build(
        DATA / "bench" / "caches" / f"{name}.h5", "--dataset", f"imagefolder:{root}", *teacher, *extra
    )


def fit(out: Path, *args: str, quiet: bool = True) -> dict:
    """Run `trainer fit` in its own process (clean peak-RSS figures) and return its summary.json."""
    import json
    import subprocess

    command = [python(), "-m", "trainer", "fit", *map(str, args), "--out", str(out), "--overwrite"]
    if quiet:
        command.append("--no-progress")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return json.loads((out / "summary.json").read_text())


def with_options(argv: list[str], **options) -> list[str]:
    """A `python -m trainer ...` step's arguments after the module, with options set (replacing given
    ones) and progress bars off: for `fit_in_process`."""
    args = [str(a) for a in argv[3:]]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if flag in args:
            i = args.index(flag)
            del args[i : i + 2]
        args += [flag, str(value)]
    return [*args, "--no-progress"]


def fit_in_process(args: list[str]) -> dict:
    """`trainer ARGS` (a fit) in this process, its summary.json; RuntimeError when it exits non-zero."""
    import json

    from trainer.cli import main

    try:
        main(args, standalone_mode=False)
    except SystemExit as err:
        if err.code:
            raise RuntimeError(f"trainer {' '.join(args)} exited with {err.code}") from None
    return json.loads((Path(args[args.index("--out") + 1]) / "summary.json").read_text())


def grid_arguments(doc: str, students, seeds: int):
    """The options every accuracy grid takes: --full, --seeds, --students, --fresh."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the GPU-sized setting (see the module doc)")
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--students", nargs="+", default=list(students))
    parser.add_argument("--fresh", action="store_true", help="forget earlier results and start again")
    return parser.parse_args()


def run_grid(name: str, runs: list[tuple[str, str, int, list]], fresh: bool = False) -> list[dict]:
    """Train every (student, arm, seed, fit args) run once; results go to data/bench/NAME/results.jsonl
    as they finish. Each run is claimed first (a file under claims/), so several processes can work
    through one grid; after a crash, delete the claims of runs with no result (or use `fresh`)."""
    import json
    import time

    folder = DATA / "bench" / name
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "results.jsonl"
    if fresh:
        log.unlink(missing_ok=True)
    claims = folder / "claims"  # lets several processes share one grid: each run is claimed once
    if fresh:
        shutil.rmtree(claims, ignore_errors=True)
    claims.mkdir(exist_ok=True)

    def claim_of(student, arm, seed) -> Path:
        return claims / re.sub(r"[^\w.-]+", "_", f"{student}-{arm}-{seed}")

    for record in (json.loads(line) for line in log.read_text().splitlines()) if log.exists() else ():
        claim_of(record["student"], record["arm"], record["seed"]).touch()  # finished runs stay claimed
    for index, (student, arm, seed, args) in enumerate(runs):
        claim = claim_of(student, arm, seed)
        try:
            claim.touch(exist_ok=False)
        except FileExistsError:
            continue
        started = time.perf_counter()
        try:
            summary = fit(folder / "runs" / claim.name, "--student", student, "--seed", seed, *args)
            record = {
                "student": student,
                "arm": arm,
                "seed": seed,
                "accuracy": summary["test_accuracy"],
                "best": summary["best_accuracy"],
                "images_per_second": summary["images_per_second"],
                "seconds": round(time.perf_counter() - started, 1),
            }
        except RuntimeError as err:
            record = {"student": student, "arm": arm, "seed": seed, "error": str(err)[-300:]}
        print(
            f"[{index + 1}/{len(runs)}] {student} {arm} seed {seed}: {record.get('accuracy', record.get('error'))}",
            flush=True,
        )
        with log.open("a") as out:
            out.write(json.dumps(record) + "\n")
    return [json.loads(line) for line in log.read_text().splitlines()]


def summarise(results: list[dict], students, arms) -> list[list]:
    """Rows: student, arm, mean ± std accuracy, seconds per run."""
    rows = []
    unique = {(r["student"], r["arm"], r["seed"]): r for r in results}  # a run measured twice counts once
    for student in students:
        for arm in arms:
            hits = [r for r in unique.values() if r["student"] == student and r["arm"] == arm and "accuracy" in r]
            if not hits:
                continue
            seconds = statistics.mean(r["seconds"] for r in hits)
            rows.append([student, arm, mean_spread([r["accuracy"] for r in hits]), f"{seconds:.0f}"])
    return rows


def imagenet_sized_jpegs(count: int = 300, size: tuple[int, int] = (500, 375), classes: int = 10) -> Path:
    """data/bench/imagenet-sized-COUNT: ImageNet-sized JPEGs (500x375, quality 90) made from the shared
    CIFAR-10 train images, upscaled (bicubic) with Gaussian grain so they do not compress like
    smooth upscales: an image folder (train/<class>/) whose decode and resize cost what real photos do."""
    import numpy as np
    from PIL import Image

    target = DATA / "bench" / f"imagenet-sized-{count}"
    if target.exists():
        return target
    full = cifar10_jpeg()
    staging = Path(str(target) + ".making")
    shutil.rmtree(staging, ignore_errors=True)
    rng = np.random.default_rng(0)
    class_dirs = sorted((full / "train").iterdir())[:classes]
    for index in range(count):
        class_dir = class_dirs[index % classes]
        source = sorted(class_dir.iterdir())[index // classes]
        with Image.open(source) as image:
            big = np.asarray(image.convert("RGB").resize(size, Image.BICUBIC), dtype=np.float32)
        grain = rng.normal(0, 8, big.shape)
        out = staging / "train" / class_dir.name / f"{index:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8)).save(out, quality=90)
    os.replace(staging, target)
    return target
