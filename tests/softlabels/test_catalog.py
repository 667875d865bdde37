"""`softlabels info`, `ls` and `merge` (row shards and view sets) on every kind of cache."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.build.shards import merge, merge_views
from softlabels.catalog import seeds_text, short_spec
from softlabels.cli import main

KINDS = ("full", "topk", "multiview", "merged_views", "merged_rows")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize("kind", KINDS)
def test_info_shows_everything_a_user_looks_for(cache_of, kind):
    cache = cache_of(kind)
    text = run("info", cache).output
    for line in (
        "teacher       small_cnn with teacher.pt",
        "split         train",
        "classes       cat, dog, frog",
        "teacher acc.",
        "by softlabels 0.1.0 (format v1)",
        "dataset fp    sha256:",
        "weights sha",
    ):
        assert line in text, text
    summary = json.loads(run("info", cache, "--json").output)
    assert summary["num_samples"] == 18 and summary["num_classes"] == 3 and summary["complete"] is True
    assert summary["split"] == "train" and summary["classes"] == ["cat", "dog", "frog"]
    assert summary["size_bytes"] == cache.stat().st_size
    assert summary["bytes_per_sample"] == pytest.approx(summary["size_bytes"] / 18)
    assert summary["fingerprints"]["dataset"].startswith("sha256:") and summary["fingerprints"]["teacher_weights"]
    assert 0 <= summary["teacher_accuracy"] <= 1 and summary["created"]


def test_info_describes_storage_and_views(cache_of):
    topk = json.loads(run("info", cache_of("topk"), "--json").output)
    assert topk["storage"] == {"kind": "topk", "topk": 2, "dtype": "float32", "compression": "gzip"}
    assert "top-2 logits + logsumexp, float32, compression gzip" in run("info", cache_of("topk")).output
    merged = cache_of("merged_views")
    assert json.loads(run("info", merged, "--json").output)["view_seeds"] == [0, 0, 1, 1]
    assert "flip augmentation, seed 0: views 0-1, seed 1: views 2-3" in run("info", merged).output
    assert "the plain image" in run("info", cache_of("full")).output


def test_info_on_a_partial_build(cache_of, write_partial, tmp_path):
    partial = write_partial(cache_of("full"), tmp_path / "stopped.h5", rows=4)
    text = run("info", partial).output
    assert "INCOMPLETE: 4 of 18 rows written" in text and "--resume" in text


def test_ls_lists_caches_partials_and_skips_other_files(cache_of, write_partial, tmp_path):
    shelf = tmp_path / "shelf"
    (shelf / "team" / "deep").mkdir(parents=True)
    cache_of("full").rename(shelf / "full.h5")
    cache_of("topk").rename(shelf / "team" / "deep" / "topk.h5")
    write_partial(shelf / "full.h5", shelf / "team" / "stopped.h5", rows=4)
    with h5py.File(shelf / "team" / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    (shelf / "junk.hdf5").write_bytes(b"not hdf5")
    (shelf / "notes.txt").write_text("not a cache")
    result = run("ls", shelf)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["NAME", "TEACHER", "DATASET/SPLIT"]
    assert [line.split()[0] for line in lines[1:4]] == ["full.h5", "team/deep/topk.h5", "team/stopped.h5.partial"]
    assert "float32 top-2 gzip" in lines[2] and "complete" in lines[2]
    assert "partial 22%" in lines[3]
    assert "skipped 2 HDF5 file(s) that are not caches: junk.hdf5, team/other.h5" in result.output
    listing = json.loads(run("ls", shelf, "--json").output)
    rows = {row["name"]: row for row in listing["caches"]}
    assert rows["full.h5"]["complete"] and rows["full.h5"]["num_samples"] == 18 and rows["full.h5"]["split"] == "train"
    assert rows["team/stopped.h5.partial"]["complete"] is False
    assert {item["name"] for item in listing["skipped"]} == {"junk.hdf5", "team/other.h5"}


def test_ls_of_missing_folder_is_one_clear_line(tmp_path):
    result = run("ls", tmp_path / "nope")
    assert result.exit_code != 0 and "nope" in result.output
    assert run("ls", tmp_path).output.strip() == "no softlabels caches found"


def test_merged_views_hold_every_view_of_every_input(make_cache, dense, tmp_path):
    first = make_cache("a.h5", views=2, augment="flip")
    second = make_cache("b.h5", views=1, augment="flip", seed=5)
    out = merge_views([first, second], tmp_path / "merged.h5", progress=False)
    store.verify(out)
    info = store.read_info(out)
    assert info.layout.num_views == 3 and info.augment.seeds == (0, 0, 5) and info.augment.views == 3
    np.testing.assert_array_equal(dense(out), np.concatenate([dense(first), dense(second)], axis=1))
    targets = store.CacheTargets(out)
    np.testing.assert_array_equal(
        targets.params(0), np.concatenate([store.CacheTargets(p).params(0) for p in (first, second)])
    )
    assert store.read_keys_labels(out)[0] == store.read_keys_labels(first)[0]
    # Merging a merged cache again keeps the record of every view's seed.
    third = make_cache("c.h5", views=1, augment="flip", seed=9)
    again = merge_views([out, third], tmp_path / "again.h5", progress=False)
    assert store.read_info(again).augment.seeds == (0, 0, 5, 9)


@pytest.mark.parametrize(
    "other, message",
    [
        (dict(views=2, augment="flip"), "both hold views of seed 0"),
        (dict(views=2, augment="flip", seed=1, topk=2), "differ in build.storage"),
        (dict(views=2, augment="flip", seed=1, dtype="float16"), "differ in build.dtype"),
        (dict(views=2, augment="cifar", seed=1), "differ in augment.name"),
        (dict(views=2, augment="flip", seed=1, mean=(0.5, 0.5, 0.5)), "differ in preprocessing"),
        (dict(views=2, augment="flip", seed=1, split="test"), "differ in dataset.fingerprint"),
        (dict(views=2, augment="flip", seed=1, weights=None), "differ in teacher.weights_sha256"),
        (dict(), "has no augmentation"),
        (dict(views=2, augment="flip", seed=1, shard=(0, 2)), "is a shard"),
    ],
)
def test_inconsistent_view_sets_are_refused(make_cache, tmp_path, other, message):
    base = make_cache("base.h5", views=2, augment="flip")
    extra = make_cache("extra.h5", **other)
    with pytest.raises(ValueError, match=message):
        merge_views([base, extra], tmp_path / "merged.h5", progress=False)
    assert not (tmp_path / "merged.h5").exists() and not store.partial_path(tmp_path / "merged.h5").exists()


def test_merge_command_decides_rows_or_views(make_cache, tmp_path):
    parts = [make_cache(f"part{i}.h5", shard=(i, 2)) for i in range(2)]
    result = run("merge", *parts, "--out", tmp_path / "rows.h5")
    assert result.exit_code == 0 and "merged 2 shard(s)" in result.output and "18 samples x 1 view(s)" in result.output
    views = [make_cache("v0.h5", views=2, augment="flip"), make_cache("v1.h5", views=2, augment="flip", seed=1)]
    result = run("merge", *views, "--out", tmp_path / "views.h5")
    assert (
        result.exit_code == 0 and "merged 2 view set(s)" in result.output and "18 samples x 4 view(s)" in result.output
    )
    result = run("merge", parts[0], views[0], "--out", tmp_path / "mixed.h5")
    assert result.exit_code == 1 and "cannot mix shards and whole caches" in result.output
    result = run("merge", *views, "--kind", "rows", "--out", tmp_path / "forced.h5")
    assert result.exit_code == 1 and "not a shard" in result.output
    result = run("merge", *views, "--out", tmp_path / "views.h5")
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert merge(views, tmp_path / "views.h5", overwrite=True, progress=False)[0] == "views"


def test_small_text_helpers():
    assert seeds_text([3, 3]) == "seed 3"
    assert seeds_text([0, 0, 1, 2, 2]) == "seed 0: views 0-1, seed 1: view 2, seed 2: views 3-4"
    assert short_spec("imagefolder:/data/shared/cifar") == "imagefolder:cifar"
    assert short_spec("/home/me/nets.py:make") == "nets.py:make"
    assert short_spec("cifar10") == "cifar10"
