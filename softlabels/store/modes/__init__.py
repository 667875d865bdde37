"""Storage modes: one class per way of storing teacher outputs, each owning its HDF5 datasets.

Adding a mode is one `StorageMode` subclass in one file here, listed in `MODES`; the writer, the
reader, `verify`, `export`, `inspect` and the trainer then handle it through its methods.
"""

from __future__ import annotations

from softlabels.store.modes.base import NonFiniteOutputs, StorageMode, index_dtype
from softlabels.store.modes.logits import FullLogits
from softlabels.store.modes.quant8 import Quant8
from softlabels.store.modes.topk import TopK

MODES: dict[str, type[StorageMode]] = {mode.name: mode for mode in (FullLogits, TopK, Quant8)}
STORAGES = tuple(MODES)


def storage_mode(name: str, num_classes: int, dtype: str = "float16", topk: int | None = None) -> StorageMode:
    """The codec of mode `name` for `num_classes` classes."""
    try:
        mode = MODES[name]
    except KeyError:
        raise ValueError(f"unknown storage {name!r}; choose one of: {', '.join(MODES)}") from None
    return mode(num_classes, dtype, topk)


__all__ = ["MODES", "STORAGES", "NonFiniteOutputs", "StorageMode", "index_dtype", "storage_mode"]
