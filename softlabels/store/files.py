"""The HDF5 side of the schema: dataset paths of a layout, attributes, opening files, chunking and
block checksums. Shared by the writer, the reader and the checks (the only modules importing h5py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import h5py
import numpy as np

from softlabels.extras import install_hint
from softlabels.store.rows import DIGESTS, PARAMS, Rows
from softlabels.store.schema import JSON_ATTRS, NO_LABEL, PARTIAL_SUFFIX, CacheError, Layout

CHUNK_BYTES = 64 * 1024
KEYS, LABELS = "keys", "labels"
DONE, BLOCK_SHA256 = "integrity/done", "integrity/block_sha256"
DIGESTS_SHA256 = "integrity/samples_sha256"  # per block: SHA-256 of its rows of `samples/sha256`
DIGEST_BYTES = 32
BUILD_ID = "build_id"  # root attribute: a random id drawn when the file is created (docs/FORMAT.md)
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def partial_path(path: str | Path) -> Path:
    """Where a build of `path` writes until the cache is complete."""
    return Path(str(path) + PARTIAL_SUFFIX)


def row_datasets(layout: Layout) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-sample data written by the teacher pass: path -> (shape, dtype)."""
    out = layout.mode.datasets(layout.rows) if layout.has_logits else {}
    if layout.embedding is not None:
        out.update(layout.embedding.datasets(layout.rows))
    if layout.param_names:
        out[PARAMS] = ((layout.num_samples, layout.num_views, len(layout.param_names)), np.dtype(np.int32))
    if layout.sample_digests:
        out[DIGESTS] = ((layout.num_samples, DIGEST_BYTES), np.dtype(np.uint8))
    return out


def checksum_tables(layout: Layout) -> dict[str, list[str]]:
    """Per-block checksum table -> the datasets it covers. The block checksum keeps its version-1
    meaning (labels, targets, view parameters); sample digests have a table of their own, so readers
    that predate them still verify new files."""
    labels = [LABELS] if layout.labelled else []
    tables = {BLOCK_SHA256: [*labels, *(name for name in row_datasets(layout) if name != DIGESTS)]}
    if layout.sample_digests:
        tables[DIGESTS_SHA256] = [DIGESTS]
    return tables


def checksummed(layout: Layout) -> list[str]:
    return [name for names in checksum_tables(layout).values() for name in names]


def read_rows(file: h5py.File, layout: Layout, index, maps: dict | None = None) -> Rows:
    """Rows (a slice, an index or a sorted index array) of every row dataset: one index from its
    memory map where `maps` has one (`mapped.memory_maps`), else through HDF5."""
    maps = maps or {}
    single = isinstance(index, (int, np.integer))
    arrays = {
        name: maps[name].row(int(index)) if single and name in maps else file[name][index]
        for name in row_datasets(layout)
    }
    return Rows.from_arrays(layout.mode, arrays, layout.embedding)


def read_labels(file: h5py.File, layout: Layout, rows: slice = slice(None)) -> np.ndarray:
    """The labels of `rows`; `NO_LABEL` for every row of an unlabelled cache (which stores none)."""
    if layout.labelled:
        return file[LABELS][rows]
    return np.full(len(range(layout.num_samples)[rows]), NO_LABEL, dtype=np.int64)


def label_arrays(file: h5py.File, layout: Layout, rows: slice) -> dict[str, np.ndarray]:
    """The stored labels of `rows` as a checksum input: {} for an unlabelled cache."""
    return {LABELS: file[LABELS][rows]} if layout.labelled else {}


# ----------------------------------------------------------------------------- checksums


def block_digest(arrays: dict[str, np.ndarray]) -> bytes:
    """SHA-256 over each dataset name (sorted) and its block's bytes (docs/FORMAT.md, "Block checksum")."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.digest()


def read_block(file, layout: Layout, block: int) -> dict[str, np.ndarray]:
    start, stop = layout.block_range(block)
    return {name: file[name][start:stop] for name in checksummed(layout)}


def block_digests(layout: Layout, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Checksum table -> this block's checksum, from the block's arrays (every `checksummed` name)."""
    return {table: block_digest({n: arrays[n] for n in names}) for table, names in checksum_tables(layout).items()}


def stored_digest(file, block: int, table: str = BLOCK_SHA256) -> bytes:
    return file[table][block].tobytes()


def mismatched_table(file, layout: Layout, block: int, arrays: dict[str, np.ndarray]) -> str | None:
    """The first checksum table whose stored checksum of `block` differs from `arrays`' (None: all match)."""
    for table, digest in block_digests(layout, arrays).items():
        if digest != stored_digest(file, block, table):
            return table
    return None


# ----------------------------------------------------------------------------- attributes


def attr(obj, name, default=None):
    """A root or object attribute as a plain Python value."""
    value = obj.attrs.get(name, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    return value


def read_json_attr(file, name) -> dict:
    text = attr(file, name)
    if text is None:
        return {}
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise CacheError(f"attribute {name!r} is not valid JSON") from None


def read_json_attrs(file) -> dict[str, dict]:
    return {name: read_json_attr(file, name) for name in JSON_ATTRS}


def to_json(value) -> str:
    return json.dumps(value, sort_keys=True)


def read_keys(file) -> list[str]:
    return [k.decode("utf-8") if isinstance(k, bytes) else k for k in file[KEYS][:]]


# ----------------------------------------------------------------------------- layout on file


def chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """About CHUNK_BYTES per chunk, along the sample axis."""
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    rows = max(1, min(shape[0], CHUNK_BYTES // row_bytes))
    return (rows, *shape[1:])


# ----------------------------------------------------------------------------- identity


def new_build_id() -> str:
    return uuid.uuid4().hex


def identity(file: h5py.File) -> str:
    """What names this very file: its build id (caches written before build ids: none) and a SHA-256
    of its block checksums, which cover every label and stored target. A file put in its place by
    another build, a copy or a merge has another identity."""
    table = file[BLOCK_SHA256][:] if BLOCK_SHA256 in file else np.zeros(0, np.uint8)
    return f"{attr(file, BUILD_ID) or '-'}:{hashlib.sha256(np.ascontiguousarray(table).tobytes()).hexdigest()[:32]}"


# ----------------------------------------------------------------------------- opening


def is_url(path) -> bool:
    """`s3://...`, `hf://...`, `memory://...`: a cache read through fsspec (a plain path otherwise)."""
    return isinstance(path, str) and URL.match(path) is not None


def file_size(path) -> int:
    if is_url(path):
        fs, inner = _url_fs(path)
        return int(fs.size(inner))
    return os.path.getsize(path)


def _url_fs(url: str):
    try:
        import fsspec
    except ImportError:
        raise ValueError(f"{url} is a URL: reading caches from URLs needs fsspec: {install_hint('remote')}") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:  # an unknown protocol, or its package is missing
        raise ValueError(f"cannot open {url}: {short_reason(err)}") from None


class _UrlFile(h5py.File):
    """An HDF5 file read through an fsspec file object, closed with it."""

    def __init__(self, handle, url: str):
        super().__init__(handle, "r")
        self._handle, self.url = handle, url

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._handle.close()


def _open_url(url: str) -> h5py.File:
    fs, inner = _url_fs(url)
    if not fs.exists(inner):
        raise FileNotFoundError(f"cache not found: {url}")
    handle = fs.open(inner, "rb")
    try:
        return _UrlFile(handle, url)
    except OSError as err:
        handle.close()
        raise CacheError(f"{url} is not a readable HDF5 file (truncated or corrupt?): {short_reason(err)}") from None


def name_of(file: h5py.File) -> str:
    """The path or URL a cache was opened from (h5py names file objects by their repr)."""
    return getattr(file, "url", None) or file.filename


def errno_of(err: BaseException) -> int | None:
    """The errno inside an h5py error's text ("... errno = 28, error message = ...")."""
    found = re.search(r"errno = (\d+)", str(err))
    return int(found.group(1)) if found else getattr(err, "errno", None)


def short_reason(err: BaseException) -> str:
    """The OS's words for an error (h5py wraps them in a page of HDF5 context)."""
    text = str(err)
    for marker in ("error message = '", "errno = "):
        if marker in text:
            return text.split(marker, 1)[1].split("'")[0].split(",")[0]
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return text.splitlines()[0] if text else type(err).__name__


def open_cache_file(path) -> h5py.File:
    """Open a cache read-only with a clear error for missing or unreadable files; URLs (`s3://`,
    `hf://`, ...) are read through fsspec where it is installed."""
    if is_url(path):
        return _open_url(path)
    path = Path(path)
    if not path.exists():
        hint = (
            f" (a partial build exists at {partial_path(path)}: finish it with --resume)"
            if partial_path(path).exists()
            else ""
        )
        raise FileNotFoundError(f"cache not found: {path}{hint}")
    try:
        # Default HDF5 locking: readers take shared locks, so many processes read one cache. On NFS,
        # set HDF5_USE_FILE_LOCKING=BEST_EFFORT (docs/FORMAT.md). Passing our own flag here would
        # clash with a user's own h5py handle on the same file ("locking flag values don't match").
        return h5py.File(path, "r")
    except OSError as err:
        raise CacheError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {err}") from None
