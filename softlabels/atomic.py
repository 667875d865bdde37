"""Atomic file writes: a temporary name beside the target, fsync, rename: readers never see half a file."""

from __future__ import annotations

import os
from pathlib import Path


def write_bytes_atomic(data: bytes, path: str | Path) -> Path:
    """Write to a temporary name beside `path`, fsync, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a file-size limit: say which file, not the temporary name
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"cannot write {path} ({len(data) / 2**20:.1f} MiB): {err.strerror or err}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename is still atomic
        pass
    finally:
        os.close(fd)
