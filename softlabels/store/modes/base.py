"""What every storage mode provides: the HDF5 datasets it owns and how teacher outputs go in and out."""

from __future__ import annotations

from typing import ClassVar

import numpy as np


def index_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned integer type that holds every class index."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if num_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


class NonFiniteOutputs(ValueError):
    """The teacher produced NaN or infinite logits for some rows of a batch."""

    def __init__(self, rows: list[int]):
        self.rows = rows
        super().__init__(f"teacher produced non-finite logits in {len(rows)} rows")


def check_finite(values) -> None:
    """Raise NonFiniteOutputs naming the rows (first axis) of a torch tensor holding NaN or inf."""
    import torch

    finite = torch.isfinite(values).flatten(1).all(dim=1)
    if not bool(finite.all()):
        raise NonFiniteOutputs(torch.nonzero(~finite).flatten().tolist())


class StorageMode:
    """How a cache stores each view's teacher outputs. One subclass per mode, registered by `name`.

    Arrays are keyed by the mode's own dataset paths (`datasets`); they are (n, V, ...) for rows of
    several samples (n, V, M, ...) with M teachers), (V, ...) for one sample or (...) for one view:
    every method works on the trailing axes, so it accepts any of these.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, num_classes: int, dtype: str = "float16", topk: int | None = None):
        self.num_classes, self.dtype, self.topk = num_classes, dtype, topk

    def datasets(self, rows: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The row datasets this mode owns for leading axes `rows` ((N, V) or (N, V, M)): path -> (shape, dtype)."""
        raise NotImplementedError

    def encode(self, logits) -> dict[str, np.ndarray]:
        """Stored arrays of a torch tensor of logits (n, V, C), any device; raises NonFiniteOutputs."""
        raise NotImplementedError

    def dense(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Full float32 logits (..., C) from stored arrays (exact or rebuilt, as the mode says)."""
        raise NotImplementedError

    def top1(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The teacher's arg-max class of every view."""
        raise NotImplementedError

    def finite(self, arrays: dict[str, np.ndarray]) -> bool:
        """Whether every stored value is finite."""
        return all(np.isfinite(a.astype(np.float32)).all() for a in arrays.values() if a.dtype.kind == "f")

    def differences(self, arrays: dict[str, np.ndarray], fresh: np.ndarray) -> np.ndarray:
        """Largest |stored - fresh| per view, on what the mode stores, for fresh float32 logits (V, C)."""
        raise NotImplementedError

    def export(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The stored arrays under plain names (`softlabels export --keep-...`)."""
        raise NotImplementedError

    @property
    def bytes_per_view(self) -> int:
        return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.datasets((1, 1)).values())

    def label(self, short: bool = False) -> str:
        """How `info` and `ls` name the mode."""
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"
