"""Rows read straight from a memory map of the cache file, for random access from DataLoader workers.

HDF5 spends 100 µs or more on a one-row read (selection, chunk lookup, a syscall); a random row of an
uncompressed dataset is a fixed run of bytes in the file, so once the file offset of each chunk is
known (one pass over the chunk index when the file is opened), a row is a copy out of the page cache:
a few microseconds, and the pages are shared by every process reading the cache. Compressed datasets
(and files opened through a driver other than the default one: fsspec URLs) are read through HDF5.
"""

from __future__ import annotations

import os

import h5py
import numpy as np


class MappedRows:
    """The rows of one uncompressed dataset, stored contiguously or chunked along its first axis."""

    def __init__(self, buffer: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, chunk_rows: int, offsets):
        self.buffer = buffer  # the whole file, uint8
        self.shape, self.dtype = shape, dtype
        self.row_items = int(np.prod(shape[1:], dtype=np.int64))
        self.row_bytes = self.row_items * dtype.itemsize
        self.chunk_rows = chunk_rows
        self.offsets = offsets  # (chunks,) int64: where each chunk starts in the file

    def row(self, index: int) -> np.ndarray:
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"row {index} is out of range for {self.shape[0]} rows")
        start = int(self.offsets[index // self.chunk_rows]) + (index % self.chunk_rows) * self.row_bytes
        values = np.frombuffer(self.buffer, dtype=self.dtype, count=self.row_items, offset=start)
        return values.reshape(self.shape[1:]).copy()


def memory_maps(file: h5py.File, names) -> dict[str, MappedRows]:
    """`MappedRows` of the datasets in `names` that can be read from a memory map of the very file
    `file` has open (same device and inode); the others are left to HDF5."""
    if file.driver != "sec2":
        return {}
    placed = {name: where for name in names if (where := _placement(file[name])) is not None}
    if not placed:
        return {}
    opened = os.fstat(file.id.get_vfd_handle())
    with open(file.filename, "rb") as raw:
        mine = os.fstat(raw.fileno())
        if (mine.st_dev, mine.st_ino) != (opened.st_dev, opened.st_ino):
            return {}  # the path names another file now: read through the checked handle
        buffer = np.memmap(raw, dtype=np.uint8, mode="r")
    maps = {}
    for name, (chunk_rows, offsets) in placed.items():
        dataset = file[name]
        rows = MappedRows(buffer, dataset.shape, dataset.dtype, chunk_rows, offsets)
        if int(offsets.max()) + chunk_rows * rows.row_bytes <= len(buffer):  # else truncated: HDF5 says so
            maps[name] = rows
    return maps


def _placement(dataset: h5py.Dataset) -> tuple[int, np.ndarray] | None:
    """(rows per chunk, file offset of each chunk) of an unfiltered dataset whose every chunk is
    allocated and spans whole rows; None when its rows cannot be mapped."""
    if not dataset.size or dataset.id.get_create_plist().get_nfilters() or not dataset.dtype.isnative:
        return None
    if dataset.chunks is None:
        offset = dataset.id.get_offset()
        return None if offset is None else (dataset.shape[0], np.array([offset], dtype=np.int64))
    if tuple(dataset.chunks[1:]) != tuple(dataset.shape[1:]):
        return None
    chunk_rows = dataset.chunks[0]
    offsets = np.full(-(-dataset.shape[0] // chunk_rows), -1, dtype=np.int64)

    def record(info) -> None:
        offsets[info.chunk_offset[0] // chunk_rows] = info.byte_offset

    try:
        dataset.id.chunk_iter(record)
    except (AttributeError, RuntimeError):  # HDF5 before 1.14: no chunk iteration
        return None
    return None if (offsets < 0).any() else (chunk_rows, offsets)
