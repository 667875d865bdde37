"""Dataset specs -> sources: every sample with a stable key, a label, and a way to decode it.

A spec is one of
  - a built-in name (`DATASET_NAMES`), read with torchvision under the data root (train/test);
    Fashion-MNIST is also found where Debian's `dataset-fashion-mnist` installs it;
  - `imagefolder:PATH`, class sub-folders under PATH/<split> (or PATH itself when it has no split
    folders), found and ordered exactly as torchvision's ImageFolder does;
  - `FILE.py:FUNC`, a factory in the user's file called as FUNC(split=..., root=...) that returns a
    torch Dataset of (image, label) items.
Keys are what caches are matched by: the index for built-ins ("0", "1", ...), the path relative to
the split folder for image folders ("cat/0001.jpg"), the dataset's `keys` attribute (else the index)
for factories.

Each sample also has a content digest, the SHA-256 of its source bytes (`DatasetSource.read`,
`digest`): the file's bytes for image folders, the decoded sample (pixels with mode and size; tensors
with dtype and shape) for built-ins and factories. The build stores it; `verify --dataset` and the
trainer compare it.

A source pickles cheaply for DataLoader workers (fork or spawn): it holds paths and arrays; the
underlying torchvision or user dataset is dropped when pickled and rebuilt on first use in the worker.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from softlabels.userfiles import import_user_file

DATASET_NAMES = ("cifar10", "cifar100", "mnist", "fashion-mnist")
SPLITS = ("train", "test")
SPEC_FORMS = (*DATASET_NAMES, "imagefolder:PATH", "FILE.py:FUNC")
# Folder names that mark an image folder as split into train/test/... rather than flat.
SPLIT_FOLDER_NAMES = ("train", "val", "valid", "validation", "test")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Grey image folders: the ImageNet statistics averaged over channels (as timm does for 1-channel inputs).
IMAGENET_GREY_MEAN, IMAGENET_GREY_STD = (0.449,), (0.226,)
GREY_MODES = ("1", "L", "LA")

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


@dataclass
class DatasetSource:
    """One split of one dataset: keys, labels and classes in memory, images decoded on `load`."""

    spec: str
    split: str
    root: str
    keys: list[str]
    labels: np.ndarray
    classes: list[str]
    defaults: dict
    reader: _Reader = field(repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, index: int) -> Image.Image:
        """Sample `index` decoded, in its own mode (grey stays "L")."""
        return self.reader.load(index)

    def read(self, index: int) -> tuple[Image.Image, bytes]:
        """Sample `index` decoded, and the SHA-256 of its source bytes (read once for both)."""
        return self.reader.read(index)

    def digest(self, index: int) -> bytes:
        """The SHA-256 of sample `index`'s source bytes (for files: without decoding them)."""
        return self.reader.digest(index)

    def where(self, index: int) -> str:
        """How messages name sample `index`: its key, and its file where it has one."""
        return self.reader.where(index, self.keys[index])

    @property
    def digest_source(self) -> str:
        """What the content digest covers: `file bytes` or `decoded samples`."""
        return self.reader.digest_source

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "split": self.split,
            "root": self.root,
            "num_samples": len(self),
            "classes": list(self.classes),
        }


class _Reader:
    """Decodes sample i; rebuilds whatever it wraps lazily, so pickles carry no data or handles."""

    def __init__(self):
        self._dataset = None

    def dataset(self):
        if self._dataset is None:
            self._dataset = self.open()
        return self._dataset

    def open(self):
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        raise NotImplementedError

    digest_source = "decoded samples"

    def read(self, index: int) -> tuple[Image.Image, bytes]:
        sample = self.load(index)
        return sample, sample_digest(sample)

    def digest(self, index: int) -> bytes:
        return self.read(index)[1]

    def where(self, index: int, key: str) -> str:
        return f"sample {key_text(key)}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_dataset": None}


class _TorchvisionReader(_Reader):
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


class _FolderReader(_Reader):
    def __init__(self, root: str, keys: list[str]):
        super().__init__()
        self.root, self.keys = root, keys

    digest_source = "file bytes"

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.keys[index])

    def load(self, index: int) -> Image.Image:
        return load_image(self.path(index))

    def read(self, index: int) -> tuple[Image.Image, bytes]:
        data = Path(self.path(index)).read_bytes()
        return load_image(io.BytesIO(data)), hashlib.sha256(data).digest()

    def digest(self, index: int) -> bytes:
        with open(self.path(index), "rb") as file:
            return hashlib.file_digest(file, "sha256").digest() if hasattr(hashlib, "file_digest") else _sha256(file)

    def where(self, index: int, key: str) -> str:
        return f"sample {key_text(key)} ({key_text(self.path(index))})"


class _FactoryReader(_Reader):
    def __init__(self, path: str, func: str, split: str, root: str, dataset=None, shape=None):
        super().__init__()
        self.path, self.func, self.split, self.root = path, func, split, root
        self.shape = shape  # tensor samples: the (shape, dtype) signature every item must have
        self._dataset = dataset

    def open(self):
        return _call_factory(Path(self.path), self.func, self.split, self.root)

    def load(self, index: int) -> Image.Image:
        item = self.dataset()[index][0]
        spec = f"{self.path}:{self.func}"
        if self.shape is None:
            return _as_image(item, spec, index)
        sample = as_sample(item, spec, index)
        if signature(sample) != self.shape:
            raise ValueError(
                f"{spec}: sample {index} is {describe_signature(signature(sample))} but the first is "
                f"{describe_signature(self.shape)}: every sample must have one shape and dtype"
            )
        return sample

    def where(self, index: int, key: str) -> str:
        return f"sample {key_text(key)} (item {index} of {Path(self.path).name}:{self.func})"


def load_image(path) -> Image.Image:
    """Decode an image file (a path or a binary file object), keeping greyscale as "L" and turning
    everything else into "RGB"."""
    with Image.open(path) as img:
        return img.convert("L" if img.mode in GREY_MODES else "RGB")


def sample_digest(sample) -> bytes:
    """SHA-256 of a decoded sample: an image's mode, size and pixel bytes; a tensor's dtype, shape and
    values; a dict's entries in key order."""
    digest = hashlib.sha256()
    _digest_into(digest, sample)
    return digest.digest()


def _digest_into(digest, sample) -> None:
    if isinstance(sample, Image.Image):
        digest.update(f"{sample.mode} {sample.width}x{sample.height}\n".encode())
        digest.update(sample.tobytes())
    elif isinstance(sample, dict):
        for name in sorted(sample):
            digest.update(f"{name}\n".encode())
            _digest_into(digest, sample[name])
    else:
        values = sample.detach().cpu().contiguous()
        digest.update(f"{values.dtype} {tuple(values.shape)}\n".encode())
        digest.update(values.view(torch.uint8).numpy().tobytes() if values.numel() else b"")


def _sha256(file) -> bytes:
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return digest.digest()


def key_text(key: str) -> str:
    """A key or path as messages print it: control characters (a newline in a file name) escaped, so a
    one-line message stays one line and shows the name as it is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(key))


def open_dataset(spec: str, split: str = "train", root: str | Path = "data", download: bool = False) -> DatasetSource:
    """The samples a spec names, with stable keys, labels and class names.

    Args:
        spec: a built-in name (`cifar10`, `fashion-mnist`, ...), `imagefolder:PATH` or `FILE.py:FUNC`.
        split: `train`, `test`, or an image folder's split sub-folder.
        root: where built-in datasets live.
        download: let torchvision download a built-in dataset (needs a network).
    Returns:
        A `DatasetSource` (keys, labels, classes in memory; samples decoded on `load(i)`).
    Raises:
        ValueError: an unknown spec form; FileNotFoundError: data that is not there.
    """
    kind, arg = _parse_spec(spec)
    if kind == "builtin":
        return _open_builtin(spec, arg, split, Path(root).expanduser().resolve(), download)
    if kind == "imagefolder":
        return _open_image_folder(spec, Path(arg).expanduser(), split)
    return _open_factory(spec, Path(arg[0]).expanduser(), arg[1], split, Path(root).expanduser().resolve())


def eval_spec_for(spec: str, root: str | Path = "data") -> tuple[str, str] | None:
    """(spec, split) of the held-out split that matches `spec`, or None where there is none.

    Built-ins: their test split. Image folders: PATH/test when both PATH/train and PATH/test exist.
    `FILE.py:FUNC`: the factory's "test" split; it decides what that means (or raises).
    `root` is accepted for symmetry with `open_dataset`; nothing here needs to read it.
    """
    kind, arg = _parse_spec(spec)
    if kind == "imagefolder":
        path = Path(arg).expanduser()
        return (spec, "test") if (path / "train").is_dir() and (path / "test").is_dir() else None
    return spec, "test"


def _parse_spec(spec: str) -> tuple[str, Any]:
    if spec in BUILTINS:
        return "builtin", spec
    if spec.startswith("imagefolder:"):
        path = spec[len("imagefolder:") :]
        if not path:
            raise ValueError("imagefolder: needs a path, e.g. imagefolder:data/my-images")
        return "imagefolder", path
    file, sep, func = spec.rpartition(":")
    if sep and file.endswith(".py") and func.isidentifier():
        return "factory", (file, func)
    hint = f" (did you mean imagefolder:{spec}?)" if spec and Path(spec).expanduser().is_dir() else ""
    raise ValueError(f"unknown dataset {spec!r}; choose one of: {', '.join(SPEC_FORMS)}{hint}")


# --- built-ins -----------------------------------------------------------------------------------


def _open_builtin(spec: str, name: str, split: str, root: Path, download: bool) -> DatasetSource:
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


# --- image folders -------------------------------------------------------------------------------


def _split_folder(path: Path, split: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist")
    if (path / split).is_dir():
        return path / split
    present = [name for name in SPLIT_FOLDER_NAMES if (path / name).is_dir()]
    if present:  # a split layout without this split: its split folders are not classes
        raise ValueError(f"image folder {path} has no {split!r} split folder; it has: {', '.join(present)}")
    return path


def _open_image_folder(spec: str, path: Path, split: str) -> DatasetSource:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    folder = _split_folder(path.resolve(), split)
    try:
        classes, class_to_idx = find_classes(folder)
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{spec} ({folder}): {err} Expected {folder}/<class>/<image>.") from None
    keys = [Path(file).relative_to(folder).as_posix() for file, _ in samples]
    with Image.open(folder / keys[0]) as first:
        grey, size = first.mode in GREY_MODES, min(first.size)
    defaults = {
        "mean": IMAGENET_GREY_MEAN if grey else IMAGENET_MEAN,
        "std": IMAGENET_GREY_STD if grey else IMAGENET_STD,
        "image_size": size,
    }
    return DatasetSource(
        spec=spec,
        split=split,
        root=str(folder),
        keys=keys,
        labels=np.array([label for _, label in samples], dtype=np.int64),
        classes=classes,
        defaults=defaults,
        reader=_FolderReader(str(folder), keys),
    )


# --- user factories ------------------------------------------------------------------------------


def _call_factory(path: Path, func: str, split: str, root: str):
    factory = getattr(import_user_file(path, "dataset"), func, None)
    if not callable(factory):
        raise ValueError(f"{path} has no function {func!r}")
    dataset = factory(split=split, root=root)
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(f"{path}:{func} returned {type(dataset).__name__}, not a Dataset with __len__ and __getitem__")
    return dataset


def _open_factory(spec: str, path: Path, func: str, split: str, root: Path) -> DatasetSource:
    dataset = _call_factory(path, func, split, str(root))
    size = len(dataset)
    if size == 0:
        raise ValueError(f"{spec} returned an empty dataset for split {split!r}")
    keys = _factory_keys(spec, dataset, size)
    labels = _factory_labels(spec, dataset, size)
    classes = [str(c) for c in getattr(dataset, "classes", None) or range(int(labels.max()) + 1)]
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(
            f"{spec}: labels must lie in 0..{len(classes) - 1} (one per class), found {labels.min()}..{labels.max()}"
        )
    first = dataset[0][0]
    shape = None
    if _is_image(first, getattr(dataset, "sample_kind", None), spec):
        image = _as_image(first, spec, 0)
        grey = image.mode in GREY_MODES
        defaults = {
            "mean": IMAGENET_GREY_MEAN if grey else IMAGENET_MEAN,
            "std": IMAGENET_GREY_STD if grey else IMAGENET_STD,
            "image_size": min(image.size),
        }
    else:
        sample = as_sample(first, spec, 0)
        defaults, shape = tensor_defaults(sample), signature(sample)
    reader = _FactoryReader(str(path.resolve()), func, split, str(root), dataset, shape)
    return DatasetSource(
        spec=spec,
        split=split,
        root=str(root),
        keys=keys,
        labels=labels,
        classes=classes,
        defaults=defaults,
        reader=reader,
    )


def _factory_keys(spec: str, dataset, size: int) -> list[str]:
    keys = getattr(dataset, "keys", None)
    if keys is None or callable(keys):  # a method named keys (dict-like datasets) is not a key list
        return [str(i) for i in range(size)]
    keys = [str(k) for k in keys]
    if len(keys) != size:
        raise ValueError(f"{spec}: dataset.keys has {len(keys)} entries but the dataset has {size} samples")
    if len(set(keys)) != size:
        raise ValueError(f"{spec}: dataset.keys are not unique; caches match samples by key")
    return keys


def _factory_labels(spec: str, dataset, size: int) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        labels = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets, dtype=np.int64)
        if labels.shape != (size,):
            raise ValueError(f"{spec}: dataset.targets has shape {labels.shape}, expected ({size},)")
        return labels
    from softlabels.progress import bar

    # No `targets`: one pass that decodes every item. Add a targets attribute to skip it.
    return np.array(
        [int(dataset[i][1]) for i in bar(range(size), desc=f"labels of {spec}", unit="img")], dtype=np.int64
    )


# --- samples that are not images -------------------------------------------------------------


def _is_image(item, kind: str | None, spec: str) -> bool:
    """PIL images and (1|3, H, W) or (H, W) arrays are images, unless the dataset says
    `sample_kind = "tensor"`; anything else (feature vectors, waveforms, token ids, dicts) is a tensor sample."""
    if kind not in (None, "image", "tensor"):
        raise ValueError(f"{spec}: sample_kind must be 'image' or 'tensor', got {kind!r}")
    if kind is not None:
        return kind == "image"
    if isinstance(item, Image.Image):
        return True
    shape = tuple(getattr(item, "shape", ()))
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))


def as_sample(item, spec: str, index: int):
    """A tensor sample as torch tensors, bit for bit (numpy arrays converted, dtypes kept; dicts of them)."""
    if isinstance(item, dict):
        return {str(k): as_sample(v, spec, index) for k, v in item.items()}
    if isinstance(item, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(item))
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (int, float)):
        return torch.tensor(item)
    raise ValueError(
        f"{spec}: item {index} is a {type(item).__name__}; return a tensor, an array, a dict of them, or a PIL image"
    )


def signature(sample) -> tuple:
    if isinstance(sample, dict):
        return tuple((k, *signature(v)) for k, v in sorted(sample.items()))
    return (tuple(sample.shape), str(sample.dtype))


def describe_signature(sig: tuple) -> str:
    if sig and isinstance(sig[0], tuple) and sig[0] and isinstance(sig[0][0], str):
        return "{" + ", ".join(f"{k}: {tuple(shape)} {dtype}" for k, shape, dtype in sig) + "}"
    return f"{sig[0]} {sig[1]}"


def tensor_defaults(sample) -> dict:
    """The input of tensor samples: no image geometry or statistics; `features` is the flat size."""
    features = int(np.prod(sample.shape)) if isinstance(sample, torch.Tensor) else None
    return {"mean": (0.0,), "std": (1.0,), "image_size": 1, "sample": "tensor", "features": features}


def _as_image(item, spec: str, index: int) -> Image.Image:
    """A factory's image (PIL, uint8 or [0, 1] float tensor/array, (C,H,W) or (H,W)) as a PIL image."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item).permute(2, 0, 1) if item.ndim == 3 else torch.from_numpy(item)
    if not isinstance(item, torch.Tensor):
        raise ValueError(f"{spec}: item {index} is a {type(item).__name__}; return a PIL image or a tensor")
    if item.ndim == 2:
        item = item.unsqueeze(0)
    if item.ndim != 3 or item.shape[0] not in (1, 3):
        raise ValueError(f"{spec}: item {index} has shape {tuple(item.shape)}; expected (1 or 3, H, W)")
    if item.is_floating_point():
        if item.min() < 0 or item.max() > 1:
            raise ValueError(
                f"{spec}: item {index} is a float tensor outside [0, 1]; return un-normalised "
                "images (normalisation comes from --mean/--std), or set sample_kind = 'tensor' on the dataset "
                "for feature data"
            )
        item = (item * 255).round()
    pixels = item.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)  # "L" or "RGB"
