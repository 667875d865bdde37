"""Built-in datasets (`DATASET_NAMES`), read with torchvision under the data root (train/test);
Fashion-MNIST is also found where Debian's `dataset-fashion-mnist` installs it."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from softlabels.data.sources import DatasetSource, Reader, key_text

DATASET_NAMES = ("cifar10", "cifar100", "mnist", "fashion-mnist")
SPLITS = ("train", "test")

FASHION_MNIST_ENV = "SOFTLABELS_FASHION_MNIST_DIR"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = tuple(
    f"{prefix}-{kind}-ubyte" for prefix in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
)


@dataclass(frozen=True)
class _Builtin:
    torchvision_class: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int


BUILTINS = {
    "cifar10": _Builtin("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32),
    "cifar100": _Builtin("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 32),
    "mnist": _Builtin("MNIST", (0.1307,), (0.3081,), 28),
    "fashion-mnist": _Builtin("FashionMNIST", (0.2860,), (0.3530,), 28),
}


class _TorchvisionReader(Reader):
    def __init__(self, class_name: str, root: str, train: bool, dataset=None):
        super().__init__()
        self.class_name, self.root, self.train = class_name, root, train
        self._dataset = dataset

    def open(self):
        import torchvision

        return getattr(torchvision.datasets, self.class_name)(self.root, train=self.train)

    def load(self, index: int) -> Image.Image:
        return self.dataset()[index][0]

    def where(self, index: int, key: str) -> str:
        return f"sample {key_text(key)} of {self.class_name} ({'train' if self.train else 'test'})"


def open_builtin(spec: str, name: str, split: str, root: Path, download: bool) -> DatasetSource:
    import torchvision

    if split not in SPLITS:
        raise ValueError(f"{name} has splits {', '.join(SPLITS)}; got split {split!r}")
    builtin = BUILTINS[name]
    cls = getattr(torchvision.datasets, builtin.torchvision_class)
    if name == "fashion-mnist":
        unpack_debian_fashion_mnist(root)
    try:
        dataset = cls(str(root), train=split == "train", download=download)
    except RuntimeError as err:
        if download or "not found" not in str(err).lower():
            raise
        raise FileNotFoundError(_missing_message(name, root)) from None
    labels = np.asarray(dataset.targets, dtype=np.int64)
    return DatasetSource(
        spec=spec,
        split=split,
        root=str(_data_folder(name, root)),
        keys=[str(i) for i in range(len(labels))],
        labels=labels,
        classes=list(dataset.classes),
        defaults={"mean": builtin.mean, "std": builtin.std, "image_size": builtin.image_size},
        reader=_TorchvisionReader(builtin.torchvision_class, str(root), split == "train", dataset),
    )


def _data_folder(name: str, root: Path) -> Path:
    """The folder torchvision reads `name` from under `root`."""
    import torchvision

    cls = getattr(torchvision.datasets, BUILTINS[name].torchvision_class)
    if hasattr(cls, "base_folder"):  # CIFAR
        return root / cls.base_folder
    return root / cls.__name__ / "raw"


def _missing_message(name: str, root: Path) -> str:
    if name == "fashion-mnist":
        return (
            f"fashion-mnist not found in {_data_folder(name, root)} nor in {fashion_mnist_debian_dir()}; "
            "pass --download where a network exists, or apt-get install dataset-fashion-mnist"
        )
    return (
        f"{name} not found (or incomplete) in {_data_folder(name, root)}; pass --download where a network exists, "
        "or point --data-root at the folder that holds it"
    )


def fashion_mnist_debian_dir() -> Path:
    """Where Debian's `dataset-fashion-mnist` puts the .gz files ($SOFTLABELS_FASHION_MNIST_DIR overrides)."""
    return Path(os.environ.get(FASHION_MNIST_ENV) or DEBIAN_FASHION_MNIST_DIR)


def unpack_debian_fashion_mnist(root: Path) -> bool:
    """Unpack Debian's Fashion-MNIST into `root`/FashionMNIST/raw where torchvision expects it.

    Does nothing (False) when the raw files are already there or the Debian files are missing.
    Each file is written under a temporary name and renamed, so a crash never leaves half a file.
    """
    raw = Path(root) / "FashionMNIST" / "raw"
    missing = [name for name in FASHION_MNIST_FILES if not (raw / name).is_file()]
    sources = [fashion_mnist_debian_dir() / f"{name}.gz" for name in missing]
    if not missing or not all(path.is_file() for path in sources):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name, source in zip(missing, sources):
        handle, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=raw)
        try:
            with gzip.open(source, "rb") as packed, os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(packed, out, 1 << 20)
            os.replace(temp, raw / name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    return True
