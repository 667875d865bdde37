"""Session-scoped fixtures of the invariant matrix: the world (tests/invariants/world.py) and its
caches, each built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from softlabels.build import BuildConfig, build_cache
from tests.invariants.world import Kind, World, build_options, make_world


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    return make_world(tmp_path_factory.mktemp("invariants"))


@pytest.fixture(scope="session")
def cache_for(world, tmp_path_factory):
    """cache_for(Kind(...)) -> the path of that cache, built once per session."""
    folder = tmp_path_factory.mktemp("caches")
    built: dict[Kind, Path] = {}

    def make(kind: Kind) -> Path:
        if kind not in built:
            built[kind] = build_cache(
                BuildConfig.from_options(**build_options(world, kind, folder / f"{kind.name}.h5"))
            ).path
        return built[kind]

    return make
