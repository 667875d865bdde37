"""Dataset specs -> sources. A spec is one of
- a built-in name (`DATASET_NAMES`: `softlabels.data.builtin`);
- `imagefolder:PATH` (`softlabels.data.folders`);
- `FILE.py:FUNC`, a factory in the user's file (`softlabels.data.factories`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from softlabels.data.builtin import BUILTINS, DATASET_NAMES, open_builtin
from softlabels.data.factories import open_factory
from softlabels.data.folders import open_image_folder
from softlabels.data.sources import DatasetSource

SPEC_FORMS = (*DATASET_NAMES, "imagefolder:PATH", "FILE.py:FUNC")


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
        return open_builtin(spec, arg, split, Path(root).expanduser().resolve(), download)
    if kind == "imagefolder":
        return open_image_folder(spec, Path(arg).expanduser(), split)
    return open_factory(spec, Path(arg[0]).expanduser(), arg[1], split, Path(root).expanduser().resolve())


def eval_spec_for(spec: str, root: str | Path = "data") -> tuple[str, str] | None:
    """(spec, split) of the held-out split that matches `spec`, or None where there is none.

    Built-ins: their test split. Image folders beside PATH/train: PATH/test, else PATH/val (as
    torchvision's ImageNet names its held-out split).
    `FILE.py:FUNC`: the factory's "test" split; it decides what that means (or raises).
    `root` is accepted for symmetry with `open_dataset`; nothing here needs to read it.
    """
    kind, arg = _parse_spec(spec)
    if kind == "imagefolder":
        path = Path(arg).expanduser()
        found = [split for split in ("test", "val") if (path / split).is_dir()]
        return (spec, found[0]) if (path / "train").is_dir() and found else None
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
