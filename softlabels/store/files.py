"""The HDF5 side of the schema: dataset paths of a layout, attributes, opening files, chunking and
block checksums. Shared by the writer, the reader and the checks (the only modules importing h5py)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import h5py
import numpy as np

from softlabels.store.rows import PARAMS, Rows
from softlabels.store.schema import JSON_ATTRS, PARTIAL_SUFFIX, CacheError, Layout

CHUNK_BYTES = 64 * 1024
KEYS, LABELS = "keys", "labels"
DONE, BLOCK_SHA256 = "integrity/done", "integrity/block_sha256"


def partial_path(path: str | Path) -> Path:
    """Where a build of `path` writes until the cache is complete."""
    return Path(str(path) + PARTIAL_SUFFIX)


def row_datasets(layout: Layout) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-sample data written by the teacher pass: path -> (shape, dtype)."""
    out = layout.mode.datasets(layout.rows)
    if layout.param_names:
        out[PARAMS] = ((layout.num_samples, layout.num_views, len(layout.param_names)), np.dtype(np.int32))
    return out


def checksummed(layout: Layout) -> list[str]:
    return [LABELS, *row_datasets(layout)]


def read_rows(file: h5py.File, layout: Layout, index) -> Rows:
    """Rows (a slice, an index or a sorted index array) of every row dataset."""
    return Rows.from_arrays(layout.mode, {name: file[name][index] for name in row_datasets(layout)})


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


def stored_digest(file, block: int) -> bytes:
    return file[BLOCK_SHA256][block].tobytes()


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


def read_layout(file: h5py.File) -> Layout:
    """The layout recorded in an open file (after the header checks)."""
    from softlabels.store.checking import check_header

    check_header(file)
    names: tuple[str, ...] = ()
    if PARAMS in file:
        names = tuple(json.loads(attr(file[PARAMS], "names", "[]")))
    return Layout(
        num_samples=int(attr(file, "num_samples")),
        num_classes=int(attr(file, "num_classes")),
        num_views=int(attr(file, "num_views")),
        storage=attr(file, "storage", "logits"),
        dtype=attr(file, "dtype", "float16"),
        topk=attr(file, "topk"),
        param_names=names,
        compression=attr(file, "compression", "none"),
        block_rows=int(attr(file["integrity"], "block_rows")) if "integrity" in file else 1024,
        num_teachers=int(attr(file, "num_teachers", 1)),
    )


# ----------------------------------------------------------------------------- opening


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
    """Open a cache read-only with a clear error for missing or unreadable files."""
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
