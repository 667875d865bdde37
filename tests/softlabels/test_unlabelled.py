"""Data without labels: a flat image folder or a factory of bare samples builds a cache that stores
no labels, whose keys, digests and fingerprint work as usual, and which `info`, `ls`, `verify` and
`merge` handle; `inspect` reports what needs no labels."""

import hashlib
import json
import shutil
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.build import BuildConfig, build_cache
from softlabels.build.shards import merge_caches
from softlabels.cli import main
from softlabels.data import open_dataset
from softlabels.data.folders import LooseImagesWarning


@pytest.fixture
def flat_folder(image_folder, tmp_path):
    """The 18 training images of `image_folder` in one folder, renamed so that no name gives a class."""
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, image in enumerate(sorted((image_folder / "train").rglob("*.png"))):
        shutil.copy(image, flat / f"{(index * 7) % 18:03d}.png")
    return flat


@pytest.fixture
def unlabelled_options(build_options, flat_folder, tmp_path):
    return {**build_options, "dataset": f"imagefolder:{flat_folder}", "out": str(tmp_path / "u.h5"), "num_classes": 3}


def test_a_flat_folder_is_an_unlabelled_dataset(flat_folder):
    source = open_dataset(f"imagefolder:{flat_folder}")
    assert not source.labelled and source.classes == []
    assert source.keys == sorted(source.keys) and len(source.keys) == 18 and source.keys[0] == "000.png"
    assert (source.labels == store.NO_LABEL).all()
    assert source.digest(0) == hashlib.sha256((flat_folder / "000.png").read_bytes()).digest()


def test_a_folder_with_class_folders_stays_labelled(image_folder):
    assert open_dataset(f"imagefolder:{image_folder}").labelled


def test_images_beside_class_folders_are_named_as_left_out(image_folder):
    train = image_folder / "train"
    shutil.copy(next(train.rglob("*.png")), train / "stray.png")
    with pytest.warns(LooseImagesWarning, match=r"1 image\(s\) directly in .*train \(stray.png\) are in no class"):
        source = open_dataset(f"imagefolder:{image_folder}")
    assert source.labelled and len(source.keys) == 18 and "stray.png" not in source.keys


def test_an_empty_folder_says_what_it_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        open_dataset(f"imagefolder:{tmp_path}")


def test_the_fingerprint_of_an_unlabelled_dataset_hashes_keys_with_an_empty_label():
    expected = "sha256:" + hashlib.sha256(b"a.png\t\nb.png\t\n").hexdigest()
    assert store.dataset_fingerprint(["a.png", "b.png"], [store.NO_LABEL] * 2) == expected
    labelled = "sha256:" + hashlib.sha256(b"a.png\t0\nb.png\t2\n").hexdigest()
    assert store.dataset_fingerprint(["a.png", "b.png"], [0, 2]) == labelled  # unchanged for labelled data


def test_an_unlabelled_cache_stores_no_labels(unlabelled_options, flat_folder):
    result = build_cache(BuildConfig.from_options(**unlabelled_options))
    assert result.teacher_accuracy is None
    source = open_dataset(f"imagefolder:{flat_folder}")
    with h5py.File(result.path, "r") as file:
        assert "labels" not in file
        assert file.attrs["format_version"] == 3  # older readers refuse it by version, not by a missing dataset
        assert list(file["keys"].asstr()[:]) == source.keys
        assert file["samples/sha256"][3].tobytes() == source.digest(3)
    info = store.read_info(result.path)
    assert not info.layout.labelled and info.layout.num_classes == 3
    assert info.fingerprint == store.dataset_fingerprint(source.keys, source.labels)
    assert np.isnan(store.verify(result.path).teacher_accuracy)
    keys, labels = store.read_keys_labels(result.path)
    assert keys == source.keys and (labels == store.NO_LABEL).all()


def test_an_unlabelled_cache_holds_the_same_logits_as_the_labelled_one(build_options, unlabelled_options, flat_folder):
    labelled = build_cache(BuildConfig.from_options(**build_options)).path
    unlabelled = build_cache(BuildConfig.from_options(**unlabelled_options)).path
    keys_l, _ = store.read_keys_labels(labelled)
    with h5py.File(labelled, "r") as a, h5py.File(unlabelled, "r") as b:
        by_digest = {a["samples/sha256"][i].tobytes(): a["logits"][i] for i in range(len(keys_l))}
        for i in range(b["logits"].shape[0]):
            np.testing.assert_allclose(b["logits"][i], by_digest[b["samples/sha256"][i].tobytes()], atol=1e-5)


def test_a_damaged_unlabelled_cache_is_refused(unlabelled_options, flip_row_byte):
    path = build_cache(BuildConfig.from_options(**unlabelled_options)).path
    flip_row_byte(path, "logits", 5, 0)
    with pytest.raises(store.CacheError, match="checksum mismatch in block 0"):
        store.verify(path)


def test_unlabelled_shards_merge(unlabelled_options, tmp_path):
    whole = build_cache(BuildConfig.from_options(**unlabelled_options)).path
    shards = [
        build_cache(
            BuildConfig.from_options(**{**unlabelled_options, "out": str(tmp_path / f"s{i}.h5"), "shard": (i, 2)})
        ).path
        for i in range(2)
    ]
    merged = merge_caches(shards, tmp_path / "merged.h5")
    assert store.read_info(merged).fingerprint == store.read_info(whole).fingerprint
    assert not store.read_info(merged).layout.labelled
    with h5py.File(whole, "r") as a, h5py.File(merged, "r") as b:
        np.testing.assert_allclose(a["logits"][:], b["logits"][:], atol=1e-5)  # other batches: float32 rounding


def test_info_and_ls_say_unlabelled(unlabelled_options, tmp_path):
    path = build_cache(BuildConfig.from_options(**unlabelled_options)).path
    info = CliRunner().invoke(main, ["info", str(path)])
    assert info.exit_code == 0 and "unlabelled (no labels stored)" in info.output
    assert "teacher acc.  n/a: unlabelled" in info.output
    listing = CliRunner().invoke(main, ["ls", str(tmp_path)])
    assert listing.exit_code == 0 and "unlabelled" in listing.output.splitlines()[1]


def test_build_says_there_is_no_teacher_accuracy(unlabelled_options):
    options = unlabelled_options
    args = ["build", "--dataset", options["dataset"], "--teacher", "small_cnn", "--weights", options["weights"]]
    args += ["--out", options["out"], "--num-classes", "3", "--workers", "0", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "unlabelled (no teacher accuracy)" in result.output


def test_inspect_reports_an_unlabelled_cache_without_accuracy(unlabelled_options, tmp_path):
    path = build_cache(BuildConfig.from_options(**unlabelled_options)).path
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["inspect", str(path), "--out", str(out), "--probe", "knn"])
    assert result.exit_code == 0, result.output
    assert "no labels: accuracy needs a labelled cache" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["labelled"] is False and "accuracy" not in report and "calibration" not in report
    assert report["probes"] == "no labels: accuracy needs a labelled cache"
    predictions = report["predictions"]
    assert predictions["accuracy"] == "no labels: accuracy needs a labelled cache" and predictions["predictions"] == 18
    assert sum(predictions["predicted_classes"].values()) == 18 and len(predictions["predicted_classes"]) == 3
    stored = store.CacheTargets(path)
    logits = np.stack([stored.logits(i, 0) for i in range(18)])
    expected = np.bincount(logits.argmax(1), minlength=3).tolist()
    assert list(predictions["predicted_classes"].values()) == expected
    assert 0 < predictions["confidence"]["mean"] <= 1 and sum(predictions["confidence"]["histogram"]["counts"]) == 18
    assert report["plots"] == ["predictions.png"] and (out / "predictions.png").stat().st_size > 0
    assert "No labels: accuracy needs a labelled cache" in (out / "report.md").read_text()


FACTORY = """
import torch

class Bare(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((3, 8, 8), i / 10)

class Pairs(Bare):
    def __getitem__(self, i):
        return torch.full((3, 8, 8), i / 10), None

def bare(split, root):
    return Bare()

def pairs(split, root):
    return Pairs()
"""


@pytest.mark.parametrize("func", ["bare", "pairs"])
def test_a_factory_without_labels_is_unlabelled(tmp_path, func):
    path = tmp_path / "unlabelled_data.py"
    path.write_text(textwrap.dedent(FACTORY))
    source = open_dataset(f"{path}:{func}")
    assert not source.labelled and source.classes == [] and len(source) == 6
    assert np.asarray(source.load(2)).mean() == pytest.approx(0.2 * 255, abs=1)
