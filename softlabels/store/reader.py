"""Reading a cache: its metadata (`read_info`), keys and labels, rows in order (`iter_rows`) and the
per-sample targets for DataLoader workers (`CacheTargets`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import h5py
import numpy as np

from softlabels.store import files
from softlabels.store.checking import check_loaded, check_structure, read_checked_block, read_layout
from softlabels.store.mapped import MappedRows, memory_maps
from softlabels.store.rows import Rows
from softlabels.store.schema import FORMAT_NAME, JSON_ATTRS, CacheError, CacheInfo, Metadata
from softlabels.store.writer import layout_bytes


def read_info(path) -> CacheInfo:
    """Header, attributes and structure check of a cache (no per-sample data is read)."""
    with files.open_cache_file(path) as file:
        return info_of(file, path)


def info_of(file: h5py.File, path) -> CacheInfo:
    """`read_info` of an open file."""
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
    return _complete(read_info(path))


def _complete(info: CacheInfo) -> CacheInfo:
    if not info.complete:
        raise CacheError(f"{info.path} is incomplete (complete=false): finish the build with --resume")
    return info


def read_keys_labels(path) -> tuple[list[str], np.ndarray]:
    with files.open_cache_file(path) as file:
        return files.read_keys(file), files.read_labels(file, read_layout(file))


def read_digests(path) -> np.ndarray | None:
    """The (N, 32) SHA-256 of every sample's source bytes, or None for a cache built before digests."""
    with files.open_cache_file(path) as file:
        return file[files.DIGESTS][:] if files.DIGESTS in file else None


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
        layout = read_layout(file)
        done = np.flatnonzero(file[files.DONE][:])
        return sum(stop - start for start, stop in (layout.block_range(int(b)) for b in done))


def iter_rows(path, step: int | None = None) -> Iterator[tuple[int, int, np.ndarray, Rows]]:
    """Yield (start, stop, labels, rows) over a cache's rows in order."""
    with files.open_cache_file(path) as file:
        layout = read_layout(file)
        step = step or layout.block_rows
        for start in range(0, layout.num_samples, step):
            stop = min(start + step, layout.num_samples)
            labels = files.read_labels(file, layout, slice(start, stop))
            yield start, stop, labels, files.read_rows(file, layout, slice(start, stop))


class CacheTargets:
    """Per-sample teacher targets of a complete cache, safe across DataLoader workers.

    The file is opened once: its metadata, its identity and (for caches up to `memory_budget`
    bytes) every row are read through that one handle, so what was checked is what is read. Rows in
    memory are numpy arrays shared copy-on-write by forked workers. Larger caches are read lazily, one
    row at a time: the main process keeps its handle; every other process (DataLoader workers) opens
    its own on first use, and refuses a file whose identity (build id and block checksums) is not the
    one checked here, e.g. one that `softlabels build --overwrite` put in its place meanwhile.

    With `verify` (the default), block checksums are checked: all of them when the cache is read into
    memory, and each block on its first touch when it is read lazily (a block verified by one worker
    counts for all). A damaged block raises CacheError naming it. Lazily read rows come from a memory
    map of the file each process has open and checked, where they are stored uncompressed
    (`mapped.memory_maps`), else through HDF5.
    """

    def __init__(self, path, memory_budget: int = 2 << 30, verify: bool = True, on_block=None):
        self.path = str(path)
        self.verify = verify
        self._file: h5py.File | None = files.open_cache_file(path)
        self._pid: int | None = os.getpid()  # the process that opened _file
        self._rows: Rows | None = None
        self._maps: dict[str, MappedRows] = {}
        try:
            self.info = _complete(info_of(self._file, path))
            self.layout = self.info.layout
            self.identity = files.identity(self._file)
            self.in_memory = layout_bytes(self.layout) <= memory_budget
            if self.in_memory:
                self._rows = self._read_all(on_block)
            else:
                self._maps = memory_maps(self._file, files.row_datasets(self.layout))
        except BaseException:
            self.close()
            raise
        if self.in_memory:
            self.close()
        self._verified = _shared_flags(self.layout.num_blocks) if verify and not self.in_memory else None

    def _read_all(self, on_block) -> Rows:
        assert self._file is not None
        arrays = {name: self._file[name][:] for name in files.row_datasets(self.layout)}
        if self.verify:
            check_loaded(self._file, self.layout, arrays, on_block)
        return Rows.from_arrays(self.layout.mode, arrays, self.layout.embedding)

    def __len__(self) -> int:
        return self.layout.num_samples

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles never cross a process boundary
        state["_maps"] = {}  # nor memory maps (each process maps the file it checked)
        return state

    def _open(self) -> h5py.File:
        if self._file is not None and self._pid != os.getpid():
            self._file, self._maps = None, {}  # inherited across fork: this process opens its own handle
        if self._file is None:
            file = files.open_cache_file(self.path)
            found = files.identity(file)
            if found != self.identity:
                file.close()
                raise CacheError(
                    f"{self.path} is not the file that was checked when it was opened (identity {self.identity[:12]}…, "
                    f"now {found[:12]}…): it was replaced meanwhile (a `softlabels build --overwrite`, a copy?); "
                    f"refusing to read another file's targets: start again to use the new file"
                )
            self._file, self._pid = file, os.getpid()
            self._maps = memory_maps(file, files.row_datasets(self.layout))
        return self._file

    def rows(self, index: int) -> Rows:
        """Stored data of one sample, every view: targets (V, ...), view parameters (V, P) and, where the
        cache has them, the digest of its source bytes (32,)."""
        if self._rows is not None:
            return self._rows.take(index)
        file = self._open()
        if self._verified is not None:
            self._check_block(file, int(index) // self.layout.block_rows)
        return files.read_rows(file, self.layout, index, self._maps)

    def _check_block(self, file: h5py.File, block: int) -> None:
        flags = self._verified
        assert flags is not None
        if not flags[block]:
            read_checked_block(file, self.layout, block)
            flags[block] = True

    def keys_labels(self) -> tuple[list[str], np.ndarray]:
        """The keys and labels of the checked file (read through its own handle, or one of the same identity)."""
        file = self._open()
        keys, labels = files.read_keys(file), files.read_labels(file, self.layout)
        if self.in_memory:
            self.close()
        return keys, labels

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

    def embeddings(self, index: int, view: int | None = None) -> np.ndarray:
        """float32 embeddings of one sample: (V, D), or (D,) for one view ((V, M, D), (M, D) with M teachers)."""
        rows = self.rows(index)
        return (rows if view is None else rows.view(view)).embeddings()

    def close(self) -> None:
        self._maps = {}
        if self._file is not None:
            if self._pid == os.getpid():
                self._file.close()
            self._file = None


def _shared_flags(count: int):
    """`count` flags in memory shared with DataLoader workers (forked or spawned): torch's shared memory."""
    import torch

    return torch.zeros(count, dtype=torch.bool).share_memory_()
