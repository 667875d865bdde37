"""`imagefolder:PATH`: class sub-folders under PATH/<split> (or PATH itself when it has no split
folders), found and ordered exactly as torchvision's ImageFolder does; the digest is the file's bytes.

A folder of images with no sub-folders at all is an unlabelled dataset: its keys are the file names,
sorted, and it has no classes (`DatasetSource.labelled` is False)."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from softlabels.data.sources import DatasetSource, Reader, image_defaults, key_text, load_image
from softlabels.store.schema import NO_LABEL

# Folder names that mark an image folder as split into train/test/... rather than flat.
SPLIT_FOLDER_NAMES = ("train", "val", "valid", "validation", "test")


class _FolderReader(Reader):
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


def _sha256(file) -> bytes:
    digest = hashlib.sha256()
    while chunk := file.read(1 << 20):
        digest.update(chunk)
    return digest.digest()


def _split_folder(path: Path, split: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist")
    if (path / split).is_dir():
        return path / split
    present = [name for name in SPLIT_FOLDER_NAMES if (path / name).is_dir()]
    if present:  # a split layout without this split: its split folders are not classes
        raise ValueError(f"image folder {path} has no {split!r} split folder; it has: {', '.join(present)}")
    return path


def _unlabelled_samples(folder: Path, extensions: tuple[str, ...]) -> list[tuple[str, int]]:
    """(file, NO_LABEL) for every image directly in `folder`, sorted by name as ImageFolder sorts."""
    with os.scandir(folder) as entries:
        names = sorted(entry.name for entry in entries if entry.is_file())
    return [(str(folder / name), NO_LABEL) for name in names if name.lower().endswith(extensions)]


class LooseImagesWarning(UserWarning):
    """Images beside the class folders of a labelled image folder: in no class, so left out."""


def _warn_loose_images(folder: Path, extensions: tuple[str, ...]) -> None:
    loose = [name for name, _ in _unlabelled_samples(folder, extensions)]
    if loose:
        warnings.warn(
            f"{len(loose)} image(s) directly in {folder} ({Path(loose[0]).name}{', ...' if len(loose) > 1 else ''}) "
            f"are in no class folder and are left out: move them into their class folder, or into a folder "
            f"of their own to build them as unlabelled images",
            LooseImagesWarning,
            stacklevel=3,
        )


def open_image_folder(spec: str, path: Path, split: str) -> DatasetSource:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    folder = _split_folder(path.resolve(), split)
    with os.scandir(folder) as entries:
        flat = not any(entry.is_dir() for entry in entries)
    if flat:
        classes, samples = [], _unlabelled_samples(folder, IMG_EXTENSIONS)
    else:
        try:
            classes, class_to_idx = find_classes(folder)
            samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{spec} ({folder}): {err} Expected {folder}/<class>/<image>.") from None
        _warn_loose_images(folder, IMG_EXTENSIONS)
    if not samples:
        raise FileNotFoundError(
            f"{spec} ({folder}): no images ({', '.join(IMG_EXTENSIONS)}); expected {folder}/<class>/<image>, "
            f"or {folder}/<image> for unlabelled images"
        )
    keys = [Path(file).relative_to(folder).as_posix() for file, _ in samples]
    with Image.open(folder / keys[0]) as first:
        defaults = image_defaults(first)
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
