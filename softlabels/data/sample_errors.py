"""Errors of one sample: `SampleError` names the sample (key, file) and the cause in one line, also
when it happened in a DataLoader worker.

Datasets read each sample under `reading(source, index)`: a bad file or bad data (a truncated JPEG,
a missing file, a factory item of the wrong type, content that changed since the cache was built)
becomes a `SampleError`. A worker's exception reaches the main process as torch re-raises it: the
same type, built from one string holding "Caught ... in DataLoader worker process N" and the
worker's traceback. `SampleError` recognises that string and keeps the one line it started from,
with the worker's traceback aside (`worker_traceback`, shown by `--debug`). Anything else (a bug in
our code, CUDA out of memory) is not a sample's fault and keeps its traceback.
"""

from __future__ import annotations

import contextlib

from PIL import Image

# What a bad file or bad data raises while it is read and decoded.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # missing or unreadable files, truncated or unidentifiable images (PIL's errors are OSErrors)
    ValueError,  # our own checks of a sample (a factory item of the wrong type or range)
    EOFError,
    SyntaxError,  # PIL: "broken PNG file", "not a TIFF file"
    Image.DecompressionBombError,
)
WORKER_MARKER = "in DataLoader worker process"


class SampleError(ValueError):
    """One sample could not be read, decoded or trusted; the message names it and the cause."""

    def __init__(self, message: str):
        self.worker_traceback: str | None = None
        if WORKER_MARKER in message and "Original Traceback" in message:
            self.worker_traceback = message
            message = _original_message(message)
        super().__init__(message)


def _original_message(wrapped: str) -> str:
    """The worker's own message: the text after the last `SampleError: ` of its traceback."""
    marker = f"{SampleError.__name__}: "
    return wrapped.rsplit(marker, 1)[-1].strip() if marker in wrapped else wrapped.splitlines()[0]


def reason(err: BaseException) -> str:
    """The cause in a few words: the OS's text for OS errors, else the exception's own message."""
    if isinstance(err, OSError) and err.strerror and not isinstance(err, Image.UnidentifiedImageError):
        return err.strerror if not err.filename else f"{err.strerror}: {err.filename}"
    if isinstance(err, Image.UnidentifiedImageError):  # its text names an in-memory buffer, not the file
        return "not an image PIL can read (an empty file, or another kind of file with an image's name)"
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def reading(source, index: int):
    """Turn a data error while reading sample `index` of `source` into a SampleError naming it."""
    try:
        yield
    except SampleError:
        raise
    except DATA_ERRORS as err:
        raise SampleError(f"cannot read {source.where(index)}: {reason(err)}") from err
