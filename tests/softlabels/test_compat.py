"""Caches written by format version 1 (committed in tests/data, see its README) stay readable forever."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import softlabels
from softlabels import store
from softlabels.catalog import describe
from softlabels.cli import main
from softlabels.export import export_arrays

DATA = Path(__file__).resolve().parents[1] / "data"
EXPECTED = json.loads((DATA / "v1-expected.json").read_text())


@pytest.fixture(params=sorted(EXPECTED))
def v1_cache(request, tmp_path):
    """A copy of one committed file (HDF5 readers must never need write access, but stay safe)."""
    copy = tmp_path / request.param
    shutil.copyfile(DATA / request.param, copy)
    return copy, EXPECTED[request.param]


def test_committed_files_are_tiny():
    for path in DATA.glob("*.h5"):
        assert path.stat().st_size < 50_000, path


def test_v1_info_and_verify(v1_cache):
    path, expected = v1_cache
    info = store.read_info(path)
    assert info.attrs["format_version"] == 1 and info.complete
    assert info.fingerprint == expected["fingerprint"]
    assert store.verify(path).fingerprint == expected["fingerprint"]
    summary = describe(path)
    assert summary["num_samples"] == len(expected["keys"]) and summary["classes"] == ["cat", "dog", "frog"]
    for command in (["info", str(path)], ["verify", str(path)], ["ls", str(path.parent)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output


def test_v1_targets_read_back_exactly(v1_cache):
    path, expected = v1_cache
    keys, labels = store.read_keys_labels(path)
    assert keys == expected["keys"] and labels.tolist() == expected["labels"]
    targets = store.CacheTargets(path)
    for index, logits in enumerate(expected["logits"]):
        np.testing.assert_array_equal(targets.logits(index), np.array(logits, dtype=np.float32))
        if expected["params"] is not None:
            np.testing.assert_array_equal(targets.params(index), expected["params"][index])
    with softlabels.open_cache(path) as cache:
        np.testing.assert_array_equal(cache.logits(keys[-1], view=None), np.array(expected["logits"][-1], np.float32))
    arrays = export_arrays(path, store.read_info(path))
    np.testing.assert_array_equal(arrays["logits"], np.array(expected["logits"], dtype=np.float32))


def test_v1_caches_without_digests_or_build_ids_keep_working(make_images, tmp_path):
    """Issue 16 added sample digests and build ids; caches written before them train and verify as before."""
    from trainer.cli import main as trainer_main

    path = tmp_path / "v1.h5"
    shutil.copyfile(DATA / "v1-logits-flip2.h5", path)
    images = make_images(tmp_path / "images", per_class=(2, 2, 2), splits=("train",))  # what it was built on
    spec = f"imagefolder:{images}"
    assert store.read_digests(path) is None and "build_id" not in store.read_info(path).attrs
    result = CliRunner().invoke(main, ["verify", str(path), "--dataset", spec])
    assert result.exit_code == 0 and "note: content not checked" in result.output, result.output
    fit = ["fit", "--cache", str(path), "--dataset", spec, "--student", "linear", "--epochs", "1", "--workers", "0"]
    fit += ["--device", "cpu", "--no-progress", "--eval-dataset", "none", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(trainer_main, [*fit, "--check-content", "--cache-memory-mb", "0"])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "holds no sample digests" in result.output
