"""`FILE.py:FUNC`: a factory in the user's file called as FUNC(split=..., root=...) that returns a
torch Dataset of (sample, label) items: images (PIL, or uint8 / [0, 1] float arrays and tensors) or
tensor samples (feature vectors, waveforms, token ids, dicts of them), fed to models as they are.

A dataset without labels returns bare samples (not tuples), or (sample, None) items: it is unlabelled
(no classes, every label `NO_LABEL`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from softlabels.data.sources import DatasetSource, Reader, image_defaults, key_text
from softlabels.progress import bar
from softlabels.store.schema import NO_LABEL
from softlabels.userfiles import import_user_file


class _FactoryReader(Reader):
    def __init__(self, path: str, func: str, split: str, root: str, dataset=None, shape=None, bare=False):
        super().__init__()
        self.path, self.func, self.split, self.root = path, func, split, root
        self.shape = shape  # tensor samples: the (shape, dtype) signature every item must have
        self.bare = bare  # items are samples alone, not (sample, label)
        self._dataset = dataset

    def open(self):
        return _call_factory(Path(self.path), self.func, self.split, self.root)

    def load(self, index: int) -> Image.Image:
        item = sample_of(self.dataset()[index], self.bare)
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


def _call_factory(path: Path, func: str, split: str, root: str):
    factory = getattr(import_user_file(path, "dataset"), func, None)
    if not callable(factory):
        raise ValueError(f"{path} has no function {func!r}")
    dataset = factory(split=split, root=root)
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ValueError(f"{path}:{func} returned {type(dataset).__name__}, not a Dataset with __len__ and __getitem__")
    return dataset


def open_factory(spec: str, path: Path, func: str, split: str, root: Path) -> DatasetSource:
    dataset = _call_factory(path, func, split, str(root))
    size = len(dataset)
    if size == 0:
        raise ValueError(f"{spec} returned an empty dataset for split {split!r}")
    keys = _factory_keys(spec, dataset, size)
    bare = _unlabelled(dataset)
    labels = np.full(size, NO_LABEL, dtype=np.int64) if bare is not None else _factory_labels(spec, dataset, size)
    classes = [] if bare is not None else _factory_classes(spec, dataset, labels)
    first = sample_of(dataset[0], bool(bare))
    shape = None
    if _is_image(first, getattr(dataset, "sample_kind", None), spec):
        defaults = image_defaults(_as_image(first, spec, 0))
    else:
        sample = as_sample(first, spec, 0)
        defaults, shape = tensor_defaults(sample), signature(sample)
    reader = _FactoryReader(str(path.resolve()), func, split, str(root), dataset, shape, bool(bare))
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


def _unlabelled(dataset) -> bool | None:
    """None for a labelled dataset; for an unlabelled one, whether its items are bare samples (True)
    or (sample, None) pairs (False). A `targets` attribute makes a dataset labelled."""
    if getattr(dataset, "targets", None) is not None:
        return None
    first = dataset[0]
    if not isinstance(first, (tuple, list)):
        return True
    return False if len(first) > 1 and first[1] is None else None


def sample_of(item, bare: bool):
    """The sample of a dataset item: the item itself when items are bare, else its first element."""
    return item if bare else item[0]


def _factory_classes(spec: str, dataset, labels: np.ndarray) -> list[str]:
    classes = [str(c) for c in getattr(dataset, "classes", None) or range(int(labels.max()) + 1)]
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(
            f"{spec}: labels must lie in 0..{len(classes) - 1} (one per class), found {labels.min()}..{labels.max()}"
        )
    return classes


def _factory_labels(spec: str, dataset, size: int) -> np.ndarray:
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        labels = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets, dtype=np.int64)
        if labels.shape != (size,):
            raise ValueError(f"{spec}: dataset.targets has shape {labels.shape}, expected ({size},)")
        return labels
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
