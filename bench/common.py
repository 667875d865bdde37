"""Shared by the benchmarks: real data from ../shared, machine description, table printing."""
from __future__ import annotations

import os
import platform
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
