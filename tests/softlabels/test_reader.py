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
    from softlabels.models import create_model

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


def flip_logits_byte(path, row: int) -> None:
    """Flip one byte of `row`'s stored logits (float32, 3 classes)."""
    import h5py

    with h5py.File(path, "r") as file:
        offset = file["logits"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + row * 12 + 1)
        byte = handle.read(1)[0]
        handle.seek(offset + row * 12 + 1)
        handle.write(bytes([byte ^ 0x5A]))


def test_block_checksums_are_checked_on_load_and_on_first_touch(make_cache, tmp_path):
    cache = make_cache("blocks.h5", block_rows=4)
    flip_logits_byte(cache, row=9)  # block 2 (rows 8..11)
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
