"""Real tiny caches for the trainer tests, built by `softlabels.build.build_cache` (no mocks)."""

from __future__ import annotations

import contextlib
import subprocess
import sys

import pytest

from softlabels.build import BuildConfig, build_cache


@pytest.fixture
def cache(build_options):
    """One float32 view per image of the 18-image folder, from a small_cnn teacher."""
    return str(build_cache(BuildConfig.from_options(**build_options)).path)


@pytest.fixture
def multiview_cache(build_options, tmp_path):
    """Three replayable `cifar` views per image."""
    options = {**build_options, "out": str(tmp_path / "views.h5"), "views": 3, "augment": "cifar", "seed": 7}
    return str(build_cache(BuildConfig.from_options(**options)).path)


@pytest.fixture
def fit_options(image_folder, tmp_path):
    """A quick, quiet CPU run: 2 epochs of batches of 4 on the 18 training images."""
    return dict(
        student="small_cnn", out=str(tmp_path / "run"), epochs=2, batch_size=4, workers=0, device="cpu", progress=False
    )


HOLD_FOLDER = (
    "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
    "print('held', flush=True); sys.stdin.read()"
)


@contextlib.contextmanager
def _holding(folder):
    folder.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.communicate("")


@pytest.fixture
def holding():
    """`with holding(folder):` another process holds the folder's lock meanwhile, as a running `trainer
    fit` or `sweep` holds its --out."""
    return _holding
