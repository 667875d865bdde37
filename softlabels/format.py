"""The softlabels cache file: the one module that knows the HDF5 schema (spec: docs/FORMAT.md).

Writing is crash-safe by construction: every dataset is created and fully allocated up front
(keys, labels and view parameters are written at creation), so the teacher pass only overwrites
raw bytes of fixed-size datasets and never changes HDF5 metadata until it finishes. A kill at any
moment leaves a readable `.partial` file whose `integrity/done` mask says which blocks are written.
The final name only ever appears through `os.replace` of a complete, re-verified file.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

FORMAT_NAME = "softlabels"
FORMAT_VERSION = 1
PARTIAL_SUFFIX = ".partial"
JSON_ATTRS = ("teacher", "dataset", "preprocessing", "augment", "build", "shard")
STORAGES = ("logits", "topk")
DTYPES = ("float16", "float32")
COMPRESSIONS = ("none", "lzf", "gzip")
CHUNK_BYTES = 64 * 1024


class CacheError(ValueError):
    """A cache file is missing, malformed, incomplete, corrupt or untrusted."""


def dataset_fingerprint(keys: Sequence[str], labels: Iterable[int]) -> str:
    """sha256 over `key TAB label NEWLINE` for every sample, in order."""
    digest = hashlib.sha256()
    for key, label in zip(keys, labels):
        digest.update(f"{key}\t{int(label)}\n".encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def index_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned integer type that holds every class index."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if num_classes - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


@dataclass(frozen=True)
class Layout:
    """Shapes and encodings of a cache's per-sample data."""

    num_samples: int
    num_classes: int
    num_views: int = 1
    storage: str = "logits"
    dtype: str = "float16"
    topk: int | None = None
    param_names: tuple[str, ...] = ()
    compression: str = "none"
    block_rows: int = 1024

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError("a cache needs at least one sample")
        if self.num_classes < 1 or self.num_views < 1 or self.block_rows < 1:
            raise ValueError("num_classes, num_views and block_rows must be positive")
        if self.storage not in STORAGES:
            raise ValueError(f"unknown storage {self.storage!r}; choose one of: {', '.join(STORAGES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {self.compression!r}; choose one of: {', '.join(COMPRESSIONS)}")
        if self.storage == "topk" and not (self.topk and 1 <= self.topk <= self.num_classes):
            raise ValueError(f"top-k K must be between 1 and the number of classes ({self.num_classes}), got {self.topk}")

    @property
    def num_blocks(self) -> int:
        return -(-self.num_samples // self.block_rows)

    def block_range(self, block: int) -> tuple[int, int]:
        start = block * self.block_rows
        return start, min(start + self.block_rows, self.num_samples)

    def row_datasets(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-sample data written by the teacher pass: name -> (shape, dtype)."""
        n, v, c = self.num_samples, self.num_views, self.num_classes
        if self.storage == "logits":
            out = {"logits": ((n, v, c), np.dtype(self.dtype))}
        else:
            k = self.topk
            out = {
                "topk/values": ((n, v, k), np.dtype(self.dtype)),
                "topk/indices": ((n, v, k), index_dtype(c)),
                "topk/logsumexp": ((n, v), np.dtype(np.float32)),
            }
        if self.param_names:
            out["views/params"] = ((n, v, len(self.param_names)), np.dtype(np.int32))
        return out

    @property
    def target_datasets(self) -> list[str]:
        """The row datasets that hold teacher outputs (everything but view parameters)."""
        return [name for name in self.row_datasets() if name != "views/params"]


# ----------------------------------------------------------------------------- encoding


def encode_outputs(logits, layout: Layout) -> dict[str, np.ndarray]:
    """Turn teacher logits (torch tensor, (n, V, C), any device) into the stored arrays.

    Top-k selection runs on the logits' device; only the selected values cross to the host.
    Raises NonFiniteOutputs listing the offending rows when any logit is NaN or infinite.
    """
    import torch

    logits = logits.float()
    _check_finite(logits)
    if layout.storage == "logits":
        stored = logits.to(getattr(torch, layout.dtype))
        _check_finite(stored)  # float16 overflows past 65504
        return {"logits": stored.cpu().numpy()}
    values, indices = torch.topk(logits, layout.topk, dim=-1, sorted=True)
    stored_values = values.to(getattr(torch, layout.dtype))
    _check_finite(stored_values)
    return {
        "topk/values": stored_values.cpu().numpy(),
        "topk/indices": indices.cpu().numpy().astype(index_dtype(layout.num_classes)),
        "topk/logsumexp": torch.logsumexp(logits, dim=-1).cpu().numpy().astype(np.float32),
    }


def _check_finite(values) -> None:
    import torch

    finite = torch.isfinite(values).flatten(1).all(dim=1)
    if not bool(finite.all()):
        raise NonFiniteOutputs(torch.nonzero(~finite).flatten().tolist())


class NonFiniteOutputs(ValueError):
    """The teacher produced NaN or infinite logits for some rows of a batch."""

    def __init__(self, rows: list[int]):
        self.rows = rows
        super().__init__(f"teacher produced non-finite logits in {len(rows)} rows")


def dense_logits(arrays: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
    """Full (..., C) float32 logits from stored arrays: exact for `logits`, approximate for top-k.

    Top-k tail approximation (docs/FORMAT.md): the K stored logits are kept exactly; the C-K missing
    classes share one logit chosen so that their total probability at temperature 1 equals the true
    tail mass, known exactly from the stored logsumexp. Any temperature then applies as usual.
    """
    if "logits" in arrays:
        return arrays["logits"].astype(np.float32)
    values = arrays["topk/values"].astype(np.float32)
    indices = arrays["topk/indices"].astype(np.int64)
    lse = arrays["topk/logsumexp"].astype(np.float32)[..., None]
    k = values.shape[-1]
    out = np.empty(values.shape[:-1] + (num_classes,), dtype=np.float32)
    if k < num_classes:
        head_mass = np.exp(values - lse).sum(axis=-1, keepdims=True)
        tail_mass = np.clip(1.0 - head_mass, 1e-12, None)
        out[...] = lse + np.log(tail_mass / (num_classes - k))
    np.put_along_axis(out, indices, values, axis=-1)
    return out


# ----------------------------------------------------------------------------- checksums


def _block_digest(arrays: dict[str, np.ndarray]) -> bytes:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.digest()


def _checksummed(layout: Layout) -> list[str]:
    return ["labels", *layout.row_datasets()]


def _read_block(file, layout: Layout, block: int) -> dict[str, np.ndarray]:
    start, stop = layout.block_range(block)
    return {name: file[name][start:stop] for name in _checksummed(layout)}


def _stored_digest(file, block: int) -> bytes:
    return file["integrity/block_sha256"][block].tobytes()


# ----------------------------------------------------------------------------- writing


def partial_path(path: str | Path) -> Path:
    return Path(str(path) + PARTIAL_SUFFIX)


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * itemsize)
    rows = max(1, min(shape[0], CHUNK_BYTES // row_bytes))
    return (rows, *shape[1:])


def _create_allocated(group: h5py.Group, name: str, shape, dtype, compression="none"):
    """A chunked dataset; uncompressed ones are allocated at creation so later writes touch only data."""
    dtype = np.dtype(dtype)
    kwargs = {"chunks": _chunks(shape, dtype.itemsize)}
    if compression == "none":
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # reserve, don't write zeros we will overwrite
        kwargs["dcpl"] = dcpl
    else:
        kwargs.update(compression=compression, shuffle=True)
    return group.create_dataset(name, shape=shape, dtype=dtype, **kwargs)


def layout_bytes(layout: Layout) -> int:
    return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in layout.row_datasets().values())


def _size_estimate(layout: Layout, keys: Sequence[str], attrs: dict) -> int:
    """An upper bound on the size of a new partial: targets, keys, labels, checksums, metadata."""
    keys_bytes = sum(len(key.encode("utf-8")) + 32 for key in keys)
    attrs_bytes = sum(len(_json(value)) for value in attrs.values())
    return layout_bytes(layout) + keys_bytes + attrs_bytes + 41 * layout.num_samples + 33 * layout.num_blocks + (64 << 10)


class PartialInUse(FileExistsError):
    """Another process holds the partial file's lock: it is writing it."""

    def __init__(self, path: Path):
        super().__init__(f"{path} is being written by another process (a build with the same --out); "
                         f"wait for it to finish, or stop it and rerun with --resume")


def _claim_space(path: Path, size: int) -> None:
    """Empty `path` and claim `size` bytes for a new partial before HDF5 writes anything: a full disk
    or a file-size limit then fails here, cleanly (HDF5's failed writes cannot be unwound quietly).
    Never while another process holds the file's HDF5 lock: that build is writing it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the lock HDF5 takes (released on close)
        except BlockingIOError:
            raise PartialInUse(path) from None
        except OSError:
            pass  # no locks on this file system (NFS): go on without, as HDF5's BEST_EFFORT locking does
        os.ftruncate(fd, 0)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            os.ftruncate(fd, size)  # no fallocate on this file system: a file-size limit still shows
    finally:
        os.close(fd)


def _reserve_space(path: Path) -> None:
    """Make the file system hand over the blocks now, so a full disk shows at the start."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def _errno_of(err: BaseException) -> int | None:
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


def _close_quietly(file) -> None:
    if file is not None:
        try:
            file.close()
        except Exception:  # the file is being discarded; its own error was already reported
            pass


def _json(value) -> str:
    return json.dumps(value, sort_keys=True)


class CacheWriter:
    """Writes one cache through a `.partial` file, block by block, then renames it into place.

    Rows arrive in order (`write`); they are gathered into blocks of `layout.block_rows`, and each
    full block is written in one go, checksummed and marked done, then the file is flushed.
    """

    def __init__(self, path: Path, file: h5py.File, layout: Layout, next_row: int):
        self.path = Path(path)
        self.file = file
        self.layout = layout
        self.next_row = next_row  # first row not yet written (always a block start)
        self._pending: list[dict[str, np.ndarray]] = []
        self._pending_rows = 0

    # -- opening
    @classmethod
    def create(cls, path, layout: Layout, keys: Sequence[str], labels, attrs: dict) -> "CacheWriter":
        """Start a new partial file beside `path` (an existing partial is replaced: callers check)."""
        path = Path(path)
        if len(keys) != layout.num_samples or len(labels) != layout.num_samples:
            raise ValueError("keys and labels must have one entry per sample")
        tmp = partial_path(path)
        file = None
        try:
            _claim_space(tmp, _size_estimate(layout, keys, attrs))
            file = h5py.File(tmp, "w", rdcc_nbytes=0)  # no chunk cache: see `_write`
            _write_header(file, layout, keys, labels, attrs)
            file.flush()
            _reserve_space(tmp)
        except PartialInUse:
            raise  # another build's file: leave it alone
        except (OSError, ValueError, RuntimeError) as err:
            # The disk or a file-size limit cannot hold the whole cache: say so before any teacher
            # time is spent. Nothing was computed yet, so nothing is lost by removing the stub.
            _close_quietly(file)
            tmp.unlink(missing_ok=True)
            raise OSError(f"cannot create {tmp} ({layout_bytes(layout) / 2**20:.1f} MiB of targets): "
                          f"{short_reason(err)}") from None
        return cls(path, file, layout, 0)

    @classmethod
    def resume(cls, path) -> "CacheWriter":
        """Reopen `path`'s partial file; writing continues at the first block not yet done."""
        tmp = partial_path(path)
        try:
            file = h5py.File(tmp, "r+", rdcc_nbytes=0)  # no chunk cache: see `_write`
        except OSError as err:
            if _errno_of(err) in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise PartialInUse(tmp) from None
            raise CacheError(f"cannot resume from {tmp} ({short_reason(err)}); pass --overwrite to start again") from None
        try:
            layout = check_structure(file)
        except CacheError as err:
            _close_quietly(file)
            raise CacheError(f"cannot resume from {tmp}: {err}; pass --overwrite to start again") from None
        next_block = _first_block_to_write(file, layout)
        return cls(Path(path), file, layout, min(next_block * layout.block_rows, layout.num_samples))

    # -- writing
    @property
    def done_rows(self) -> int:
        return self.next_row

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        """Append the next rows (in order): one array per `layout.row_datasets()` name."""
        rows = len(next(iter(arrays.values())))
        self._pending.append(arrays)
        self._pending_rows += rows
        while self._pending and self._pending_rows >= self._block_rows_left():
            self._write_block(self._take(self._block_rows_left()))

    def _block_rows_left(self) -> int:
        start, stop = self.layout.block_range(self.next_row // self.layout.block_rows)
        return stop - self.next_row

    def _take(self, rows: int) -> dict[str, np.ndarray]:
        merged = {name: np.concatenate([p[name] for p in self._pending]) for name in self._pending[0]}
        head = {name: value[:rows] for name, value in merged.items()}
        rest = {name: value[rows:] for name, value in merged.items()}
        self._pending_rows -= rows
        self._pending = [rest] if self._pending_rows else []
        return head

    def _write_block(self, arrays: dict[str, np.ndarray]) -> None:
        block = self.next_row // self.layout.block_rows
        start, stop = self.layout.block_range(block)
        for name, value in arrays.items():
            self._write(name, slice(start, stop), value)
        digest = _block_digest(self._block_arrays(start, stop, arrays))
        self._write("integrity/block_sha256", block, np.frombuffer(digest, dtype=np.uint8))
        self._write("integrity/done", block, 1)
        self.file.flush()
        self.next_row = stop

    def _write(self, name: str, where, value) -> None:
        """Write rows of one dataset. The file has no chunk cache, so each write reaches the file now,
        in order (rows before their done flag), and a failed one (full disk, file-size limit) raises
        here and leaves nothing dirty behind: with a cache, HDF5 would report it later or not at all,
        and retry it at every flush and close."""
        try:
            self.file[name][where] = value
        except (OSError, RuntimeError) as err:
            raise OSError(_errno_of(err), f"{name}: {short_reason(err)}") from None

    def _block_arrays(self, start, stop, row_arrays) -> dict[str, np.ndarray]:
        arrays = dict(row_arrays)
        arrays["labels"] = self.file["labels"][start:stop]
        return arrays

    # -- finishing
    def finish(self, extra_attrs: dict | None = None) -> Path:
        """Verify every block, mark complete, fsync, and rename the partial into place."""
        if self._pending_rows or self.next_row < self.layout.num_samples:
            raise CacheError(f"cannot finish: {self.next_row} of {self.layout.num_samples} rows written")
        for name, value in (extra_attrs or {}).items():
            self.file.attrs[name] = _json(value) if name in JSON_ATTRS else value
        self.file.flush()
        stats = check_file(self.file, require_complete=False)
        # Rewrite the attributes reserved at creation in place: `attrs[name] = value` deletes and
        # re-creates, allocating new metadata, and a failed write there (full disk, file-size limit)
        # or a kill leaves a partial that HDF5 cannot open any more.
        self.file.attrs.modify("teacher_accuracy", stats.teacher_accuracy)
        self.file.attrs.modify("complete", True)
        self.close()
        tmp = partial_path(self.path)
        final = tmp if self.layout.compression == "none" else _repack_compressed(tmp, self.layout.compression)
        _fsync(final)
        os.replace(final, self.path)
        _fsync_dir(self.path.parent)
        tmp.unlink(missing_ok=True)  # a compressed build keeps its partial until the packed file is in place
        return self.path

    def close(self) -> None:
        if self.file.id.valid:
            try:
                self.file.flush()
            finally:
                self.file.close()


def _first_block_to_write(file, layout: Layout) -> int:
    """The first block not marked done, or whose rows do not match their checksum: a block's rows reach
    the file before its flag, but after a machine crash (not just a killed process) the flag can be
    on disk without the rows."""
    done = file["integrity/done"][:]
    for block in range(layout.num_blocks):
        if not done[block] or _block_digest(_read_block(file, layout, block)) != _stored_digest(file, block):
            return block
    return layout.num_blocks


def _write_header(file, layout: Layout, keys, labels, attrs: dict) -> None:
    root = file.attrs
    root["format"] = FORMAT_NAME
    root["format_version"] = FORMAT_VERSION
    root["complete"] = False
    root["num_samples"] = layout.num_samples
    root["num_classes"] = layout.num_classes
    root["num_views"] = layout.num_views
    root["storage"] = layout.storage
    root["dtype"] = layout.dtype
    root["compression"] = layout.compression
    root["teacher_accuracy"] = np.nan  # reserved now so that finishing only rewrites it in place
    if layout.topk:
        root["topk"] = layout.topk
    root["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from softlabels import __version__

    root["softlabels_version"] = __version__
    for name, value in attrs.items():
        root[name] = _json(value) if name in JSON_ATTRS else value
    file.create_dataset("keys", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
    labels_ds = _create_allocated(file, "labels", (layout.num_samples,), np.int64)
    labels_ds[:] = np.asarray(labels, dtype=np.int64)
    for name, (shape, dtype) in layout.row_datasets().items():
        _create_allocated(file, name, shape, dtype)  # compression is applied when packing at the end
    if layout.param_names:
        file["views/params"].attrs["names"] = _json(list(layout.param_names))
    integrity = file.create_group("integrity")
    integrity.attrs["block_rows"] = layout.block_rows
    _create_allocated(integrity, "block_sha256", (layout.num_blocks, 32), np.uint8)
    _create_allocated(integrity, "done", (layout.num_blocks,), np.uint8)


def _repack_compressed(tmp: Path, compression: str) -> Path:
    """Copy a finished uncompressed partial into a compressed one (a compressed file cannot be
    pre-allocated, so it is only ever written whole, after the teacher pass)."""
    packed = Path(str(tmp) + ".packing")
    try:
        _copy_compressed(tmp, packed, compression)
    except BaseException:
        packed.unlink(missing_ok=True)  # the partial is untouched: finishing again starts over
        raise
    return packed


def _copy_compressed(tmp: Path, packed: Path, compression: str) -> None:
    with h5py.File(tmp, "r") as src, h5py.File(packed, "w") as dst:
        for name, value in src.attrs.items():
            dst.attrs[name] = value
        layout = read_layout(src)

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(dict(obj.attrs))
                return
            if name in layout.row_datasets():
                out = dst.create_dataset(name, data=obj[:], chunks=_chunks(obj.shape, obj.dtype.itemsize),
                                         compression=compression, shuffle=True)
            else:
                out = dst.create_dataset(name, data=obj[:], dtype=obj.dtype)
            out.attrs.update(dict(obj.attrs))

        src.visititems(copy)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass


# ----------------------------------------------------------------------------- reading


def _attr(file, name, default=None):
    value = file.attrs.get(name, default)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, np.generic):
        value = value.item()
    return value


def read_json_attr(file, name) -> dict:
    text = _attr(file, name)
    if text is None:
        return {}
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise CacheError(f"attribute {name!r} is not valid JSON") from None


def read_layout(file: h5py.File) -> Layout:
    """The layout recorded in an open file (after the header checks)."""
    check_header(file)
    names = ()
    if "views/params" in file:
        names = tuple(json.loads(_attr(file["views/params"], "names", "[]")))
    return Layout(
        num_samples=int(_attr(file, "num_samples")), num_classes=int(_attr(file, "num_classes")),
        num_views=int(_attr(file, "num_views")), storage=_attr(file, "storage", "logits"),
        dtype=_attr(file, "dtype", "float16"), topk=_attr(file, "topk"), param_names=names,
        compression=_attr(file, "compression", "none"),
        block_rows=int(_attr(file["integrity"], "block_rows")) if "integrity" in file else 1024,
    )


def check_header(file: h5py.File) -> None:
    if _attr(file, "format") != FORMAT_NAME:
        raise CacheError(f"{file.filename} is not a softlabels cache (no format='softlabels' attribute)")
    version = _attr(file, "format_version")
    if not isinstance(version, int) or version < 1:
        raise CacheError(f"{file.filename}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CacheError(f"{file.filename} uses cache format version {version}; this softlabels "
                         f"reads up to version {FORMAT_VERSION}: upgrade softlabels")
    for name in ("num_samples", "num_classes", "num_views"):
        if not isinstance(_attr(file, name), int):
            raise CacheError(f"{file.filename}: missing or bad root attribute {name!r}")


def check_trust(file: h5py.File) -> None:
    """A cache is data, never code: refuse links and storage that point outside the file."""
    problems = []

    def visit(name, link):
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            problems.append(f"{name} is a {type(link).__name__}")

    file.visititems_links(visit)

    def check(name, obj):
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                problems.append(f"{name} is a virtual dataset")
            if obj.external:
                problems.append(f"{name} stores its data in external files")
            if obj.dtype.kind in "OV" and h5py.check_string_dtype(obj.dtype) is None:
                problems.append(f"{name} has a non-numeric, non-string type")

    file.visititems(check)
    if problems:
        raise CacheError(f"{file.filename} is refused: {problems[0]} (caches must be self-contained data)")


def check_structure(file: h5py.File) -> Layout:
    """Header, trust and the shapes/types of every dataset the layout promises."""
    layout = read_layout(file)
    check_trust(file)
    n = layout.num_samples
    expected = {"keys": (n,), "labels": (n,), "integrity/done": (layout.num_blocks,),
                "integrity/block_sha256": (layout.num_blocks, 32)}
    expected.update({name: shape for name, (shape, _) in layout.row_datasets().items()})
    for name, shape in expected.items():
        if name not in file:
            raise CacheError(f"{file.filename}: dataset {name!r} is missing")
        if file[name].shape != shape:
            raise CacheError(f"{file.filename}: dataset {name!r} has shape {file[name].shape}, expected {shape}")
    return layout


@dataclass
class CheckStats:
    num_blocks: int
    teacher_accuracy: float
    fingerprint: str


def check_file(file: h5py.File, require_complete: bool = True) -> CheckStats:
    """Full integrity check of an open cache; raises CacheError at the first problem."""
    layout = check_structure(file)
    if require_complete and _attr(file, "complete") is not True:
        raise CacheError(f"{file.filename} is incomplete (complete=false): resume the build with --resume")
    done = file["integrity/done"][:]
    if not done.all():
        first = int(np.flatnonzero(done == 0)[0])
        raise CacheError(f"{file.filename}: block {first} (rows {layout.block_range(first)}) was never written")
    correct = 0
    for block in range(layout.num_blocks):
        start, stop = layout.block_range(block)
        try:
            arrays = _read_block(file, layout, block)
        except OSError as err:  # e.g. a damaged compressed chunk
            raise CacheError(f"{file.filename}: block {block} (rows {start}..{stop - 1}) cannot be read "
                             f"({short_reason(err)})") from None
        if _block_digest(arrays) != _stored_digest(file, block):
            raise CacheError(f"{file.filename}: checksum mismatch in block {block} (rows {start}..{stop - 1})")
        top1 = _top1(arrays)
        if not np.isfinite(arrays[layout.target_datasets[0]].astype(np.float32)).all():
            raise CacheError(f"{file.filename}: non-finite values in block {block}")
        correct += int((top1 == arrays["labels"][:, None]).sum())
    keys = [k.decode("utf-8") if isinstance(k, bytes) else k for k in file["keys"][:]]
    fingerprint = dataset_fingerprint(keys, file["labels"][:])
    # A shard holds some rows of the dataset: it records its own rows' fingerprint too.
    shard = read_json_attr(file, "shard")
    recorded = shard.get("fingerprint") if shard else read_json_attr(file, "dataset").get("fingerprint")
    if recorded and recorded != fingerprint:
        raise CacheError(f"{file.filename}: keys/labels do not match the recorded dataset fingerprint")
    return CheckStats(layout.num_blocks, correct / (layout.num_samples * layout.num_views), fingerprint)


def _top1(arrays: dict[str, np.ndarray]) -> np.ndarray:
    if "logits" in arrays:
        return arrays["logits"].argmax(axis=-1)
    return arrays["topk/indices"][..., 0].astype(np.int64)


def open_cache_file(path) -> h5py.File:
    """Open a cache read-only with a clear error for missing or unreadable files."""
    path = Path(path)
    if not path.exists():
        hint = f" (a partial build exists at {partial_path(path)}: finish it with --resume)" \
            if partial_path(path).exists() else ""
        raise FileNotFoundError(f"cache not found: {path}{hint}")
    try:
        # Default HDF5 locking: readers take shared locks, so many processes read one cache. On NFS,
        # set HDF5_USE_FILE_LOCKING=BEST_EFFORT (docs/FORMAT.md). Passing our own flag here would
        # clash with a user's own h5py handle on the same file ("locking flag values don't match").
        return h5py.File(path, "r")
    except OSError as err:
        raise CacheError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {err}") from None


def looks_like_cache(path) -> bool:
    """True when `path` opens as HDF5 and says it is a softlabels cache (complete or not)."""
    try:
        with h5py.File(path, "r") as file:
            return _attr(file, "format") == FORMAT_NAME
    except OSError:
        return False


def rows_written(path) -> int:
    """Rows in blocks marked done: how far a partial build got (every row for a complete cache)."""
    with open_cache_file(path) as file:
        layout = read_layout(file)
        done = np.flatnonzero(file["integrity/done"][:])
        return sum(stop - start for start, stop in (layout.block_range(int(b)) for b in done))


def iter_rows(path, step: int | None = None):
    """Yield (start, stop, arrays) over a cache's rows in order: `labels` and every row dataset."""
    with open_cache_file(path) as file:
        layout = read_layout(file)
        step = step or layout.block_rows
        names = ["labels", *layout.row_datasets()]
        for start in range(0, layout.num_samples, step):
            stop = min(start + step, layout.num_samples)
            yield start, stop, {name: file[name][start:stop] for name in names}


def verify(path) -> CheckStats:
    """Check structure, completeness, every block checksum and the fingerprint of a cache file."""
    with open_cache_file(path) as file:
        return check_file(file)


@dataclass
class CacheInfo:
    """Everything about a cache except its per-sample data (read once, small, picklable)."""

    path: str
    layout: Layout
    complete: bool
    teacher: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    augment: dict = field(default_factory=dict)
    build: dict = field(default_factory=dict)
    shard: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        return self.dataset.get("fingerprint")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["layout"] = asdict(self.layout)
        return out


def read_info(path) -> CacheInfo:
    """Header, attributes and structure check of a cache (no per-sample data is read)."""
    with open_cache_file(path) as file:
        layout = check_structure(file)
        json_attrs = {name: read_json_attr(file, name) for name in JSON_ATTRS}
        plain = {name: _attr(file, name) for name in file.attrs if name not in JSON_ATTRS}
        if plain.get("teacher_accuracy") != plain.get("teacher_accuracy"):  # NaN: reserved, not yet known
            plain["teacher_accuracy"] = None
        return CacheInfo(str(path), layout, plain.get("complete") is True, attrs=plain, **json_attrs)


def read_keys_labels(path) -> tuple[list[str], np.ndarray]:
    with open_cache_file(path) as file:
        keys = [k.decode("utf-8") if isinstance(k, bytes) else k for k in file["keys"][:]]
        return keys, file["labels"][:]


class CacheTargets:
    """Per-sample teacher targets of a complete cache, safe across DataLoader workers.

    Caches up to `memory_budget` bytes are read into numpy arrays once (shared copy-on-write by
    forked workers). Larger ones are read lazily, one row at a time, through an h5py handle that
    each process opens for itself on first use and never pickles.
    """

    def __init__(self, path, memory_budget: int = 2 << 30):
        self.info = read_info(path)
        if not self.info.complete:
            raise CacheError(f"{path} is incomplete (complete=false): finish the build with --resume")
        self.path = str(path)
        self.layout = self.info.layout
        names = self.layout.row_datasets()
        self.in_memory = layout_bytes(self.layout) <= memory_budget
        self._arrays: dict[str, np.ndarray] | None = None
        self._file: h5py.File | None = None
        self._pid: int | None = None  # the process that opened _file
        if self.in_memory:
            with open_cache_file(path) as file:
                self._arrays = {name: file[name][:] for name in names}

    def __len__(self) -> int:
        return self.layout.num_samples

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles never cross a process boundary
        return state

    def _source(self):
        if self._arrays is not None:
            return self._arrays
        if self._file is not None and self._pid != os.getpid():
            self.close()  # inherited across fork: this process opens its own handle
        if self._file is None:
            self._file, self._pid = open_cache_file(self.path), os.getpid()
        return self._file

    def rows(self, index: int) -> dict[str, np.ndarray]:
        """Stored arrays of one sample, all views: (V, C) / (V, K) / (V,) / params (V, P)."""
        source = self._source()
        return {name: np.asarray(source[name][index]) for name in self.layout.row_datasets()}

    def params(self, index: int) -> np.ndarray:
        """The augmentation parameters of one sample's views, (V, P) int32."""
        return np.asarray(self._source()["views/params"][index])

    def logits(self, index: int, view: int | None = None) -> np.ndarray:
        """Dense float32 logits of one sample: (V, C), or (C,) for one view (top-k expanded)."""
        rows = self.rows(index)
        if view is not None:  # expand only the view asked for
            rows = {name: value[view] for name, value in rows.items()}
        return dense_logits(rows, self.layout.num_classes)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
