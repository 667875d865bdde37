"""Real caches of every kind the commands must handle (full, top-k, multi-view, merged), built on the
suite's tiny image folder: each build takes a few tens of milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from softlabels import store
from softlabels.build import BuildConfig, build_cache
from softlabels.build.shards import merge_caches, merge_views

KINDS = ("full", "topk", "multiview", "merged_views", "merged_rows")


@pytest.fixture
def make_cache(build_options, tmp_path):
    """make_cache(name, **build options) -> path of a complete cache in tmp_path/caches (built once)."""
    folder = tmp_path / "caches"
    folder.mkdir(exist_ok=True)
    built: dict[str, dict] = {}

    def make(name: str, **options) -> Path:
        out = folder / name
        if name in built:
            assert built[name] == options, f"{name} was built with other options"
            return out
        build_cache(BuildConfig.from_options(**{**build_options, "out": str(out), **options}))
        built[name] = options
        return out

    return make


@pytest.fixture
def cache_of(make_cache, tmp_path):
    """cache_of(kind) for kind in KINDS: a cache of that kind (merged ones from real pieces)."""
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            made[kind] = _make_kind(make_cache, kind, tmp_path / "caches")
        return made[kind]

    return make


def _make_kind(make_cache, kind: str, folder: Path) -> Path:
    if kind == "full":
        return make_cache("full.h5")
    if kind == "topk":
        return make_cache("topk.h5", topk=2, compression="gzip")
    if kind == "multiview":
        return make_cache("views-seed0.h5", views=2, augment="flip")
    if kind == "merged_views":
        parts = [
            make_cache("views-seed0.h5", views=2, augment="flip"),
            make_cache("views-seed1.h5", views=2, augment="flip", seed=1),
        ]
        return merge_views(parts, folder / "merged-views.h5", progress=False)
    if kind == "merged_rows":
        parts = [make_cache(f"part{i}.h5", shard=(i, 2)) for i in range(2)]
        return merge_caches(parts, folder / "merged-rows.h5", progress=False)
    raise ValueError(f"unknown cache kind {kind!r}; choose one of: {', '.join(KINDS)}")


@pytest.fixture
def write_partial():
    """write_partial(source, out, rows): the `.partial` of a build of `out` stopped after `rows` rows."""
    return _write_partial


@pytest.fixture
def dense():
    """dense(path): all dense float32 logits (N, V, C) of a cache."""
    return _dense


def _write_partial(source: Path, out: Path, rows: int = 4) -> Path:
    """A `.partial` beside `out` holding the first `rows` rows of `source` (a build stopped early)."""
    info = store.read_info(source)
    keys, labels = store.read_keys_labels(source)
    layout = info.layout.replace(block_rows=rows, compression="none")
    writer = store.CacheWriter.create(out, layout, keys, labels, info.meta)
    *_, first_rows = next(store.iter_rows(source, rows))
    writer.write(first_rows)
    writer.close()
    return store.partial_path(out)


def _dense(path) -> np.ndarray:
    return np.concatenate([rows.dense() for *_, rows in store.iter_rows(path)])
