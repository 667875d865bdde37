"""Real tiny caches for the trainer tests, built by `softlabels.build.build_cache` (no mocks)."""

from __future__ import annotations

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
