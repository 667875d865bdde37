"""Reading a cache: its metadata (`read_info`), keys and labels, rows in order (`iter_rows`) and the
per-sample targets for DataLoader workers (`CacheTargets`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import h5py
import numpy as np

from softlabels.store import files
from softlabels.store.checking import check_structure
from softlabels.store.rows import Rows
from softlabels.store.schema import FORMAT_NAME, JSON_ATTRS, CacheError, CacheInfo, Metadata
from softlabels.store.writer import layout_bytes


def read_info(path) -> CacheInfo:
    """Header, attributes and structure check of a cache (no per-sample data is read)."""
    with files.open_cache_file(path) as file:
        layout = check_structure(file)
        meta = Metadata.from_attrs(files.read_json_attrs(file))
        plain = {name: files.attr(file, name) for name in file.attrs if name not in JSON_ATTRS}
        plain = {name: value.tolist() if isinstance(value, np.ndarray) else value for name, value in plain.items()}
        accuracy = plain.get("teacher_accuracy")
        if isinstance(accuracy, float) and math.isnan(accuracy):  # reserved, not yet known
            plain["teacher_accuracy"] = None
        return CacheInfo(str(path), layout, plain.get("complete") is True, meta, attrs=plain)


def read_complete_info(path) -> CacheInfo:
    """`read_info` of a cache that must be complete."""
    info = read_info(path)
    if not info.complete:
        raise CacheError(f"{path} is incomplete (complete=false): finish the build with --resume")
    return info


def read_keys_labels(path) -> tuple[list[str], np.ndarray]:
    with files.open_cache_file(path) as file:
        return files.read_keys(file), file[files.LABELS][:]


def looks_like_cache(path) -> bool:
    """True when `path` opens as HDF5 and says it is a softlabels cache (complete or not)."""
    try:
        with h5py.File(path, "r") as file:
            return files.attr(file, "format") == FORMAT_NAME
    except OSError:
        return False


def rows_written(path) -> int:
    """Rows in blocks marked done: how far a partial build got (every row for a complete cache)."""
    with files.open_cache_file(path) as file:
        layout = files.read_layout(file)
        done = np.flatnonzero(file[files.DONE][:])
        return sum(stop - start for start, stop in (layout.block_range(int(b)) for b in done))


def iter_rows(path, step: int | None = None) -> Iterator[tuple[int, int, np.ndarray, Rows]]:
    """Yield (start, stop, labels, rows) over a cache's rows in order."""
    with files.open_cache_file(path) as file:
        layout = files.read_layout(file)
        step = step or layout.block_rows
        for start in range(0, layout.num_samples, step):
            stop = min(start + step, layout.num_samples)
            yield start, stop, file[files.LABELS][start:stop], files.read_rows(file, layout, slice(start, stop))


class CacheTargets:
    """Per-sample teacher targets of a complete cache, safe across DataLoader workers.

    Caches up to `memory_budget` bytes are read into numpy arrays once (shared copy-on-write by
    forked workers). Larger ones are read lazily, one row at a time, through an h5py handle that
    each process opens for itself on first use and never pickles.
    """

    def __init__(self, path, memory_budget: int = 2 << 30):
        self.info = read_complete_info(path)
        self.path = str(path)
        self.layout = self.info.layout
        self.in_memory = layout_bytes(self.layout) <= memory_budget
        self._rows: Rows | None = None
        self._file: h5py.File | None = None
        self._pid: int | None = None  # the process that opened _file
        if self.in_memory:
            with files.open_cache_file(path) as file:
                self._rows = files.read_rows(file, self.layout, slice(None))

    def __len__(self) -> int:
        return self.layout.num_samples

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles never cross a process boundary
        return state

    def _open(self) -> h5py.File:
        if self._file is not None and self._pid != os.getpid():
            self.close()  # inherited across fork: this process opens its own handle
        if self._file is None:
            self._file, self._pid = files.open_cache_file(self.path), os.getpid()
        return self._file

    def rows(self, index: int) -> Rows:
        """Stored data of one sample, every view: targets (V, ...) and view parameters (V, P)."""
        if self._rows is not None:
            return self._rows.take(index)
        return files.read_rows(self._open(), self.layout, index)

    def params(self, index: int) -> np.ndarray:
        """The augmentation parameters of one sample's views, (V, P) int32."""
        params = self.rows(index).params
        if params is None:
            return np.zeros((self.layout.num_views, 0), dtype=np.int32)
        return params

    def logits(self, index: int, view: int | None = None) -> np.ndarray:
        """Dense float32 logits of one sample: (V, C), or (C,) for one view (top-k expanded)."""
        rows = self.rows(index)
        return (rows if view is None else rows.view(view)).dense()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
