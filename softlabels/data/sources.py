"""The contract every dataset source keeps: `DatasetSource`, one split with a stable key, a label and
a content digest per sample, and `Reader`, the per-kind part that decodes sample i.

An unlabelled dataset (an image folder without class sub-folders, a factory whose items carry no
label) has no classes and `NO_LABEL` (-1) for every label: `DatasetSource.labelled` is False.

Keys are what caches are matched by: the index for built-ins ("0", "1", ...), the path relative to
the split folder for image folders ("cat/0001.jpg"), the dataset's `keys` attribute (else the index)
for factories. Each sample also has a content digest, the SHA-256 of its source bytes
(`DatasetSource.read`, `digest`): the file's bytes for image folders, the decoded sample (pixels with
mode and size; tensors with dtype and shape) for built-ins and factories. The build stores it;
`verify --dataset` and the trainer compare it.

A source pickles cheaply for DataLoader workers (fork or spawn): it holds paths and arrays; the
underlying torchvision or user dataset is dropped when pickled and rebuilt on first use in the worker.
Which sources exist and how a spec names one: `softlabels.data.specs`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from softlabels.models.preprocessing import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD, IMAGENET_MEAN, IMAGENET_STD
from softlabels.store.schema import NO_LABEL

GREY_MODES = ("1", "L", "LA")


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
    reader: Reader = field(repr=False)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labelled(self) -> bool:
        """False for a dataset without labels (every label is `NO_LABEL`)."""
        return not bool(len(self.labels)) or bool(self.labels[0] != NO_LABEL)

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


class Reader:
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


def key_text(key: str) -> str:
    """A key or path as messages print it: control characters (a newline in a file name) escaped, so a
    one-line message stays one line and shows the name as it is."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(key))


def image_defaults(image: Image.Image) -> dict:
    """An image dataset's default input, from its first image: its size, and ImageNet's statistics
    (averaged over channels for grey images)."""
    grey = image.mode in GREY_MODES
    return {
        "mean": IMAGENET_GREY_MEAN if grey else IMAGENET_MEAN,
        "std": IMAGENET_GREY_STD if grey else IMAGENET_STD,
        "image_size": min(image.size),
    }
