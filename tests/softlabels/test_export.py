"""`softlabels export`: npz arrays that numpy (and scikit-learn) read without pickle, and Parquet rows that
pyarrow and Hugging Face `datasets` load."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.cli import main
from softlabels.export import export_npz


def export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


@pytest.mark.parametrize("kind", ["full", "topk", "multiview", "merged_views", "merged_rows"])
def test_npz_holds_the_cache(cache_of, dense, tmp_path, kind):
    cache = cache_of(kind)
    out = tmp_path / "cache.npz"
    result = export(cache, "--format", "npz", "--out", out)
    assert result.exit_code == 0, result.output
    data = np.load(out, allow_pickle=False)
    keys, labels = store.read_keys_labels(cache)
    assert data["keys"].tolist() == keys and data["labels"].dtype == np.int64
    np.testing.assert_array_equal(data["labels"], labels)
    assert data["classes"].tolist() == ["cat", "dog", "frog"]
    assert data["logits"].dtype == np.float32
    np.testing.assert_array_equal(data["logits"], dense(cache))
    metadata = json.loads(str(data["metadata"]))
    assert metadata["teacher"]["spec"] == "small_cnn" and metadata["format_version"] == 1
    info = store.read_info(cache)
    if info.layout.param_names:
        assert data["view_param_names"].tolist() == ["flip"]
        assert data["view_params"].shape == (18, info.layout.num_views, 1)
        np.testing.assert_array_equal(data["view_params"][3], store.CacheTargets(cache).params(3))
        assert metadata["view_seeds"] == ([0, 0, 1, 1] if kind == "merged_views" else [0, 0])
    else:
        assert "view_params" not in data


def test_keep_topk_writes_the_stored_arrays(cache_of, tmp_path):
    cache = cache_of("topk")
    out = tmp_path / "topk-arrays"  # no .npz suffix: the file is written exactly where asked
    assert export(cache, "--out", out, "--keep-topk", "--compress").exit_code == 0
    data = np.load(out, allow_pickle=False)
    assert "logits" not in data and data["topk_values"].shape == (18, 1, 2)
    *_, rows = next(store.iter_rows(cache, 18))
    stored = rows.targets
    np.testing.assert_array_equal(data["topk_indices"], stored["topk/indices"])
    np.testing.assert_array_equal(data["topk_logsumexp"], stored["topk/logsumexp"])
    rebuilt = rows.mode.dense(
        {
            "topk/values": data["topk_values"],
            "topk/indices": data["topk_indices"],
            "topk/logsumexp": data["topk_logsumexp"],
        }
    )
    np.testing.assert_array_equal(rebuilt, np.load(export_npz(cache, tmp_path / "dense.npz"))["logits"])


def test_keep_topk_writes_a_quant8_top_k_caches_stored_arrays(make_cache, tmp_path):
    """quant8 --topk K stores only K classes too: --keep-topk writes its arrays, which rebuild the logits."""
    cache = make_cache("q8top2.h5", storage="quant8", topk=2, views=2, augment="flip")
    assert export(cache, "--out", tmp_path / "q8.npz", "--keep-topk").exit_code == 0
    data = np.load(tmp_path / "q8.npz", allow_pickle=False)
    assert "logits" not in data and data["quant8_values"].shape == (18, 2, 2)
    *_, rows = next(store.iter_rows(cache, 18))
    rebuilt = rows.mode.dense(
        {
            "quant8/values": data["quant8_values"],
            "quant8/scale": data["quant8_scale"],
            "quant8/indices": rows.targets["quant8/indices"],
            "quant8/logsumexp": data["quant8_logsumexp"],
        }
    )
    np.testing.assert_array_equal(rebuilt, np.load(export_npz(cache, tmp_path / "dense.npz"))["logits"])
    from softlabels.store.modes.quant8 import index_bits, unpack_indices

    np.testing.assert_array_equal(
        data["quant8_indices"], unpack_indices(rows.targets["quant8/indices"], 2, index_bits(3))
    )


def test_export_refusals(cache_of, write_partial, tmp_path):
    full = cache_of("full")
    result = export(full, "--out", tmp_path / "x.npz", "--keep-topk")
    assert result.exit_code == 1 and "--keep-topk only applies to caches built with --topk" in result.output
    assert export(full, "--out", tmp_path / "x.npz").exit_code == 0
    result = export(full, "--out", tmp_path / "x.npz")
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert export(full, "--out", tmp_path / "x.npz", "--overwrite").exit_code == 0
    result = export(full, "--format", "csv", "--out", tmp_path / "x.csv")
    assert result.exit_code == 2 and "'csv' is not one of 'npz', 'parquet'" in result.output
    partial = write_partial(full, tmp_path / "stopped.h5")
    result = export(partial, "--out", tmp_path / "p.npz")
    assert result.exit_code == 1 and "incomplete" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------- parquet and Hugging Face


@pytest.mark.parametrize("kind", ["full", "topk", "multiview", "merged_views"])
def test_parquet_holds_the_cache_row_by_row(cache_of, dense, tmp_path, kind):
    pq = pytest.importorskip("pyarrow.parquet")
    cache = cache_of(kind)
    out = tmp_path / "cache.parquet"
    result = export(cache, "--format", "parquet", "--out", out, "--compress")
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    keys, labels = store.read_keys_labels(cache)
    assert table.column("key").to_pylist() == keys and table.column("label").to_pylist() == labels.tolist()
    np.testing.assert_array_equal(np.array(table.column("logits").to_pylist(), dtype=np.float32), dense(cache))
    digests = store.read_digests(cache)
    assert table.column("sha256").to_pylist() == [bytes(d).hex() for d in digests]
    metadata = json.loads(pq.read_schema(out).metadata[b"softlabels"])
    assert metadata["classes"] == ["cat", "dog", "frog"] and metadata["teacher"]["spec"] == "small_cnn"
    info = store.read_info(cache)
    assert metadata["num_views"] == info.layout.num_views and metadata["dataset"]["fingerprint"] == info.fingerprint
    if info.layout.param_names:
        params = np.array(table.column("view_params").to_pylist())
        np.testing.assert_array_equal(params[3], store.CacheTargets(cache).params(3))


def test_a_team_member_pulls_the_cache_into_hugging_face_datasets(cache_of, dense, tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    cache = cache_of("multiview")
    out = tmp_path / "teacher-logits.parquet"
    assert export(cache, "--format", "parquet", "--out", out).exit_code == 0
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 18 and ds.features["label"].names == ["cat", "dog", "frog"]  # class names carried along
    keys, labels = store.read_keys_labels(cache)
    assert ds["key"] == keys and ds["label"] == labels.tolist()
    rows = ds.with_format("numpy")
    np.testing.assert_array_equal(np.stack(list(rows["logits"])).astype(np.float32), dense(cache))
    first = ds[0]
    assert len(first["logits"]) == 2 and len(first["logits"][0]) == 3 and len(first["sha256"]) == 64
    # The rest of the cache's metadata travels in the file's schema (`datasets` keeps only the features).
    import pyarrow.parquet as pq

    metadata = json.loads(pq.read_schema(out).metadata[b"softlabels"])
    assert metadata["augment"]["name"] == "flip" and metadata["view_seeds"] == [0, 0]


def test_keep_topk_in_parquet(cache_of, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    cache = cache_of("topk")
    out = tmp_path / "topk.parquet"
    assert export(cache, "--format", "parquet", "--keep-topk", "--out", out).exit_code == 0
    table = pq.read_table(out)
    assert set(table.column_names) == {"key", "label", "topk_values", "topk_indices", "topk_logsumexp", "sha256"}
    *_, rows = next(store.iter_rows(cache, 18))
    np.testing.assert_array_equal(np.array(table.column("topk_indices").to_pylist()), rows.targets["topk/indices"])
