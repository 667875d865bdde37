"""Trusting what is read (issue 16): the file read is the file checked (a real `os.replace` at the worst
moment), block checksums on load and on first touch, and caches read through fsspec URLs."""

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import softlabels
from softlabels import store
from softlabels.cli import main

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def two_caches(make_cache, build_options, tmp_path):
    """Caches of the same 18 images from two different teachers: same keys and labels, other targets."""
    from softlabels.models.registry import create_model

    torch.manual_seed(1)
    other = tmp_path / "other-teacher.pt"
    torch.save(create_model("small_cnn", num_classes=3, in_channels=3, image_size=8).state_dict(), other)
    first = make_cache("first.h5")
    second = make_cache("second.h5", weights=str(other))
    assert store.read_info(first).fingerprint == store.read_info(second).fingerprint
    assert not np.array_equal(store.CacheTargets(first).logits(0), store.CacheTargets(second).logits(0))
    return first, second


def rows_of(path) -> np.ndarray:
    targets = store.CacheTargets(path)
    return np.stack([targets.logits(i) for i in range(len(targets))])


def test_a_lazy_reader_keeps_reading_the_file_it_checked(two_caches, tmp_path):
    first, second = two_caches
    expected, other = rows_of(first), rows_of(second)
    path = tmp_path / "cache.h5"
    shutil.copy(first, path)
    targets = store.CacheTargets(path, memory_budget=0)  # checked now, read row by row later
    worker_copy = pickle.dumps(targets)  # what a DataLoader worker receives
    os.replace(second, path)  # what `softlabels build --overwrite` does when it finishes
    np.testing.assert_array_equal(np.stack([targets.logits(i) for i in range(18)]), expected)
    assert not np.array_equal(expected, other)
    worker = pickle.loads(worker_copy)
    with pytest.raises(store.CacheError, match="is not the file that was checked .* replaced meanwhile"):
        worker.rows(0)
    np.testing.assert_array_equal(store.CacheTargets(path, memory_budget=0).logits(0), other[0])  # a new reader: fine

    in_memory = store.CacheTargets(first)  # rows read at once; keys are read later, to describe a mismatch
    os.replace(path, first)
    np.testing.assert_array_equal(np.stack([in_memory.logits(i) for i in range(18)]), expected)
    with pytest.raises(store.CacheError, match="replaced meanwhile"):
        in_memory.keys_labels()  # from the same file, or not at all


def test_every_reopen_checks_the_identity_also_of_version_1_caches(tmp_path):
    """Caches written before build ids are named by their block checksums."""
    v1 = tmp_path / "v1.h5"
    shutil.copy(DATA / "v1-logits-flip2.h5", v1)
    targets = store.CacheTargets(v1, memory_budget=0)
    assert targets.identity.startswith("-:")
    copy = pickle.loads(pickle.dumps(targets))
    np.testing.assert_array_equal(copy.logits(1), targets.logits(1))  # same file: reopened and accepted
    shutil.copy(DATA / "v1-topk2-gzip.h5", v1)
    with pytest.raises(store.CacheError, match="not the file that was checked"):
        pickle.loads(pickle.dumps(targets)).rows(0)


def test_block_checksums_are_checked_on_load_and_on_first_touch(make_cache, flip_row_byte):
    cache = make_cache("blocks.h5", block_rows=4)
    flip_row_byte(cache, "logits", 9, 1)  # block 2 (rows 8..11)
    with pytest.raises(store.CacheError, match=r"checksum mismatch in block 2 \(rows 8..11\)"):
        store.CacheTargets(cache)
    store.CacheTargets(cache, verify=False)  # the explicit way out
    lazy = store.CacheTargets(cache, memory_budget=0)  # nothing read yet: nothing refused yet
    lazy.rows(0), lazy.rows(7), lazy.rows(12)
    with pytest.raises(store.CacheError, match="checksum mismatch in block 2"):
        lazy.rows(8)
    worker = pickle.loads(pickle.dumps(lazy))  # a block verified in one process counts for all
    worker.rows(13)
    assert bool(lazy._verified[3]) and not bool(lazy._verified[2])
    with pytest.raises(store.CacheError, match="checksum mismatch in block 2"):
        softlabels.open_cache(cache)


# ----------------------------------------------------------------------------- memory-mapped rows (issue 13)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"storage": "topk", "topk": 2, "views": 3, "augment": "flip"},
        {"storage": "quant8", "topk": 2},
        {"dtype": "float32", "compression": "gzip"},
    ],
    ids=["logits", "topk-views", "quant8", "gzip"],
)
def test_lazy_rows_come_from_a_memory_map_and_equal_the_loaded_ones(make_cache, options):
    cache = make_cache("mapped.h5", **options)
    lazy, loaded = store.CacheTargets(cache, memory_budget=0), store.CacheTargets(cache)
    compressed = options.get("compression") == "gzip"
    assert bool(lazy._maps) is not compressed  # a compressed dataset is read through HDF5
    worker = pickle.loads(pickle.dumps(lazy))  # a spawned DataLoader worker maps its own
    for targets in (lazy, worker):
        for i in range(len(loaded)):
            a, b = targets.rows(i), loaded.rows(i)
            assert a.targets.keys() == b.targets.keys()
            for name in a.targets:
                np.testing.assert_array_equal(a.targets[name], b.targets[name])
                assert a.targets[name].flags.writeable  # a copy, not a view of the file
            np.testing.assert_array_equal(targets.params(i), loaded.params(i))
    assert bool(worker._maps) is not compressed
    with pytest.raises(IndexError):
        lazy.rows(len(loaded))


def test_caches_written_before_memory_maps_are_mapped_too(tmp_path):
    v1 = tmp_path / "v1.h5"
    shutil.copy(DATA / "v1-logits-flip2.h5", v1)
    lazy, loaded = store.CacheTargets(v1, memory_budget=0), store.CacheTargets(v1)
    assert "logits" in lazy._maps
    for i in range(len(loaded)):
        np.testing.assert_array_equal(lazy.logits(i), loaded.logits(i))


def test_a_file_replaced_before_mapping_is_read_through_the_checked_handle(two_caches, tmp_path):
    import h5py

    from softlabels.store.mapped import memory_maps

    first, second = two_caches
    path = tmp_path / "cache.h5"
    shutil.copy(first, path)
    with h5py.File(path, "r") as file:
        assert memory_maps(file, ["logits"])
        os.replace(second, path)  # the path names another file between the check and the mapping
        assert memory_maps(file, ["logits"]) == {}


# ----------------------------------------------------------------------------- fsspec URLs


@pytest.fixture
def memory_url(make_cache):
    fsspec = pytest.importorskip("fsspec")
    cache = make_cache("remote.h5", views=2, augment="flip")
    url = "memory://bucket/caches/remote.h5"
    with fsspec.open(url, "wb") as file:
        file.write(cache.read_bytes())
    yield cache, url
    fsspec.filesystem("memory").rm("/bucket", recursive=True)


@pytest.mark.parametrize("memory_budget", [0, 2 << 30])
def test_a_cache_opens_read_only_through_fsspec_urls(memory_url, memory_budget, tmp_path):
    local, url = memory_url
    assert store.read_info(url).fingerprint == store.read_info(local).fingerprint
    assert store.verify(url).num_blocks == store.verify(local).num_blocks
    cache = softlabels.open_cache(url, memory_budget=memory_budget)
    expected = softlabels.open_cache(local)
    assert cache.keys == expected.keys and len(cache) == 18
    np.testing.assert_array_equal(cache.logits(list(range(18)), view=None), expected.logits(list(range(18)), view=None))
    worker = pickle.loads(pickle.dumps(cache._targets))  # a DataLoader worker reopens the URL itself
    np.testing.assert_array_equal(worker.logits(5), expected._targets.logits(5))
    commands = (
        ["info", url],
        ["verify", url],
        ["inspect", url, "--out", str(tmp_path / "report")],
        ["export", url, "--out", str(tmp_path / "x.npz"), "--overwrite"],
    )
    for command in commands:
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output


def test_local_file_urls_and_missing_ones(make_cache, tmp_path):
    pytest.importorskip("fsspec")
    cache = make_cache("local.h5")
    url = f"file://{cache}"
    np.testing.assert_array_equal(softlabels.open_cache(url).logits(3), softlabels.open_cache(cache).logits(3))
    with pytest.raises(FileNotFoundError, match="cache not found: memory://nowhere/x.h5"):
        store.read_info("memory://nowhere/x.h5")
    result = CliRunner().invoke(main, ["info", "nosuchprotocol://x/y.h5"])
    assert result.exit_code == 1 and result.output.startswith("error: cannot open nosuchprotocol://x/y.h5")
