"""Writing a cache: crash-safe by construction (docs/FORMAT.md, "Writing protocol").

Every dataset is created and fully allocated up front (keys, labels and view parameters are written
at creation), so the teacher pass only overwrites raw bytes of fixed-size datasets and never changes
HDF5 metadata until it finishes. A kill at any moment leaves a readable `.partial` file whose
`integrity/done` mask says which blocks are written. The final name only ever appears through
`os.replace` of a complete, re-verified file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from softlabels.store import files
from softlabels.store.checking import check_file, check_structure, read_layout
from softlabels.store.rows import PARAMS, Rows
from softlabels.store.schema import FORMAT_NAME, NO_LABEL, CacheError, Layout, Metadata
from softlabels.version import __version__

partial_path = files.partial_path


class PartialInUse(FileExistsError):
    """Another process holds the partial file's lock: it is writing it."""

    def __init__(self, path: Path):
        super().__init__(
            f"{path} is being written by another process (a build with the same --out); "
            f"wait for it to finish, or stop it and rerun with --resume"
        )


def layout_bytes(layout: Layout) -> int:
    return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in files.row_datasets(layout).values())


def _size_estimate(layout: Layout, keys: Sequence[str], attrs: dict) -> int:
    """An upper bound on the size of a new partial: targets, keys, labels, checksums, metadata."""
    keys_bytes = sum(len(key.encode("utf-8")) + 32 for key in keys)
    attrs_bytes = sum(len(files.to_json(value)) for value in attrs.values())
    return (
        layout_bytes(layout) + keys_bytes + attrs_bytes + 41 * layout.num_samples + 33 * layout.num_blocks + (64 << 10)
    )


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
        _allocate(fd, size)
    finally:
        os.close(fd)


def _allocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        os.ftruncate(fd, size)  # no fallocate on this file system: a file-size limit still shows


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


def close_quietly(file) -> None:
    if file is not None:
        try:
            file.close()
        except Exception:  # the file is being discarded; its own error was already reported
            pass


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
        self._pending: list[Rows] = []
        self._pending_rows = 0

    # -- opening
    @classmethod
    def create(cls, path, layout: Layout, keys: Sequence[str], labels, meta: Metadata) -> CacheWriter:
        """Start a new partial file beside `path` (an existing partial is replaced: callers check)."""
        path = Path(path)
        if len(keys) != layout.num_samples or len(labels) != layout.num_samples:
            raise ValueError("keys and labels must have one entry per sample")
        if layout.labelled == bool(np.any(np.asarray(labels) == NO_LABEL)):
            raise ValueError("a labelled layout needs a label for every sample, an unlabelled one none")
        tmp = partial_path(path)
        attrs = meta.to_attrs()
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
            close_quietly(file)
            tmp.unlink(missing_ok=True)
            raise OSError(
                f"cannot create {tmp} ({layout_bytes(layout) / 2**20:.1f} MiB of targets): {files.short_reason(err)}"
            ) from None
        return cls(path, file, layout, 0)

    @classmethod
    def resume(cls, path, bars=None) -> CacheWriter:
        """Reopen `path`'s partial file; writing continues at the first block not yet done (each block
        marked done is re-checked first; `bars(desc, total)` reports that pass)."""
        tmp = partial_path(path)
        try:
            file = h5py.File(tmp, "r+", rdcc_nbytes=0)  # no chunk cache: see `_write`
        except OSError as err:
            if files.errno_of(err) in (errno.EAGAIN, errno.EWOULDBLOCK):
                raise PartialInUse(tmp) from None
            raise CacheError(
                f"cannot resume from {tmp} ({files.short_reason(err)}); pass --overwrite to start again"
            ) from None
        try:
            layout = check_structure(file)
        except CacheError as err:
            close_quietly(file)
            raise CacheError(f"cannot resume from {tmp}: {err}; pass --overwrite to start again") from None
        with _bar(bars, "re-checking the partial", layout.num_samples) as bar:
            next_block = _first_block_to_write(file, layout, bar)
        return cls(Path(path), file, layout, min(next_block * layout.block_rows, layout.num_samples))

    @property
    def meta(self) -> Metadata:
        """The metadata recorded in the partial file."""
        return Metadata.from_attrs(files.read_json_attrs(self.file))

    # -- writing
    @property
    def done_rows(self) -> int:
        return self.next_row

    def write(self, rows: Rows) -> None:
        """Append the next rows (in order)."""
        self._pending.append(rows)
        self._pending_rows += len(rows)
        while self._pending and self._pending_rows >= self._block_rows_left():
            self._write_block(self._take(self._block_rows_left()))

    def _block_rows_left(self) -> int:
        start, stop = self.layout.block_range(self.next_row // self.layout.block_rows)
        return stop - self.next_row

    def _take(self, count: int) -> dict[str, np.ndarray]:
        merged = Rows.concat(self._pending).arrays()
        head = {name: value[:count] for name, value in merged.items()}
        self._pending_rows -= count
        rest = {name: value[count:] for name, value in merged.items()}
        self._pending = [Rows.from_arrays(self.layout.mode, rest, self.layout.embedding)] if self._pending_rows else []
        return head

    def _write_block(self, arrays: dict[str, np.ndarray]) -> None:
        block = self.next_row // self.layout.block_rows
        start, stop = self.layout.block_range(block)
        expected = files.row_datasets(self.layout)
        if set(arrays) != set(expected):
            raise ValueError(f"rows hold {sorted(arrays)}, the layout expects {sorted(expected)}")
        for name, value in arrays.items():
            self._write(name, slice(start, stop), value)
        labels = files.label_arrays(self.file, self.layout, slice(start, stop))
        checksums = files.block_digests(self.layout, {**arrays, **labels})
        for table, digest in checksums.items():
            self._write(table, block, np.frombuffer(digest, dtype=np.uint8))
        self._write(files.DONE, block, 1)
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
            raise OSError(files.errno_of(err), f"{name}: {files.short_reason(err)}") from None

    # -- finishing
    def finish(self, bars=None) -> Path:
        """Verify every block, mark complete, fsync, and rename the partial into place; `bars(desc, total)`
        reports the re-verification and the compression."""
        if self._pending_rows or self.next_row < self.layout.num_samples:
            raise CacheError(f"cannot finish: {self.next_row} of {self.layout.num_samples} rows written")
        self.file.flush()
        with _bar(bars, "re-verifying", self.layout.num_samples) as bar:
            stats = check_file(self.file, require_complete=False, on_block=bar.update)
        # Rewrite the attributes reserved at creation in place: `attrs[name] = value` deletes and
        # re-creates, allocating new metadata, and a failed write there (full disk, file-size limit)
        # or a kill leaves a partial that HDF5 cannot open any more.
        self.file.attrs.modify("teacher_accuracy", stats.teacher_accuracy)
        if self.layout.num_teachers > 1:
            self.file.attrs.modify("member_accuracy", np.asarray(stats.member_accuracy, dtype=np.float64))
        self.file.attrs.modify("complete", True)
        self.close()
        tmp = partial_path(self.path)
        final = tmp
        if self.layout.compression != "none":
            rows = self.layout.num_samples * len(files.row_datasets(self.layout))
            with _bar(bars, f"compressing ({self.layout.compression})", rows) as bar:
                final = _repack_compressed(tmp, self.layout.compression, bar)
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


def _first_block_to_write(file, layout: Layout, bar) -> int:
    """The first block not marked done, or whose rows do not match their checksum: a block's rows reach
    the file before its flag, but after a machine crash (not just a killed process) the flag can be
    on disk without the rows."""
    done = file[files.DONE][:]
    for block in range(layout.num_blocks):
        if not done[block] or files.mismatched_table(file, layout, block, files.read_block(file, layout, block)):
            return block
        start, stop = layout.block_range(block)
        bar.update(stop - start)
    return layout.num_blocks


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _bar(bars, desc: str, total: int):
    """A progress bar from the caller's `bars(desc, total)` factory (nothing when None), closed after."""
    bar = bars(desc, total) if bars is not None else _Silent()
    try:
        yield bar
    finally:
        bar.close()


def _create_allocated(group: h5py.Group, name: str, shape, dtype):
    """A chunked dataset allocated at creation, so later writes touch only data."""
    dtype = np.dtype(dtype)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # reserve, don't write zeros we will overwrite
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=files.chunks(shape, dtype.itemsize), dcpl=dcpl)


def _write_header(file, layout: Layout, keys, labels, attrs: dict) -> None:
    root = file.attrs
    root["format"] = FORMAT_NAME
    root["format_version"] = layout.format_version
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
    if layout.targets != ("logits",):  # absent: logits alone, as in every cache before embeddings
        root["targets"] = ",".join(layout.targets)
    if layout.embedding is not None:
        root["embedding_dim"] = layout.embedding_dim
        root["embedding_dtype"] = layout.embedding_dtype
    if layout.num_teachers > 1:
        root["num_teachers"] = layout.num_teachers
        root["member_accuracy"] = np.full(layout.num_teachers, np.nan)  # rewritten in place at the end
    root["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    root[files.BUILD_ID] = files.new_build_id()
    root["softlabels_version"] = __version__
    for name, value in attrs.items():
        root[name] = files.to_json(value)
    file.create_dataset(files.KEYS, data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
    if layout.labelled:  # an unlabelled dataset stores no labels at all
        labels_ds = _create_allocated(file, files.LABELS, (layout.num_samples,), np.int64)
        labels_ds[:] = np.asarray(labels, dtype=np.int64)
    for name, (shape, dtype) in files.row_datasets(layout).items():
        _create_allocated(file, name, shape, dtype)  # compression is applied when packing at the end
    if layout.param_names:
        file[PARAMS].attrs["names"] = files.to_json(list(layout.param_names))
    integrity = file.create_group("integrity")
    integrity.attrs["block_rows"] = layout.block_rows
    _create_allocated(integrity, "block_sha256", (layout.num_blocks, 32), np.uint8)
    if layout.sample_digests:
        _create_allocated(file, files.DIGESTS_SHA256, (layout.num_blocks, 32), np.uint8)
    _create_allocated(integrity, "done", (layout.num_blocks,), np.uint8)


def _repack_compressed(tmp: Path, compression: str, bar) -> Path:
    """Copy a finished uncompressed partial into a compressed one (a compressed file cannot be
    pre-allocated, so it is only ever written whole, after the teacher pass)."""
    packed = Path(str(tmp) + ".packing")
    try:
        _copy_compressed(tmp, packed, compression, bar)
    except BaseException:
        packed.unlink(missing_ok=True)  # the partial is untouched: finishing again starts over
        raise
    return packed


def _copy_compressed(tmp: Path, packed: Path, compression: str, bar) -> None:
    with h5py.File(tmp, "r") as src, h5py.File(packed, "w") as dst:
        for name, value in src.attrs.items():
            dst.attrs[name] = value
        layout = read_layout(src)
        compressed = files.row_datasets(layout)

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(dict(obj.attrs))
                return
            if name in compressed:
                out = dst.create_dataset(
                    name,
                    shape=obj.shape,
                    dtype=obj.dtype,
                    chunks=files.chunks(obj.shape, obj.dtype.itemsize),
                    compression=compression,
                    shuffle=True,
                )
                _copy_blocks(obj, out, layout, bar)
            else:
                out = dst.create_dataset(name, data=obj[:], dtype=obj.dtype)
            out.attrs.update(dict(obj.attrs))

        src.visititems(copy)


def _copy_blocks(src, dst, layout: Layout, bar) -> None:
    """Copy a row dataset block by block (bounded memory)."""
    for block in range(layout.num_blocks):
        start, stop = layout.block_range(block)
        dst[start:stop] = src[start:stop]
        bar.update(stop - start)


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
