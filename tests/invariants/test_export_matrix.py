"""Promise (d): an export (npz, Parquet) holds the cache: the same keys, labels, classes, targets of
every view and teacher, view parameters, digests, and metadata naming every teacher.

Targets are compared with the stored datasets read by plain h5py (the stored arrays, `--keep-topk`)
or with the reader's dense logits (the default export), and embeddings with the reader's; unlabelled
caches export the label -1. Cells: `pairwise` over the axes below.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.cli import main
from tests.invariants.world import STORAGES, Kind, pairwise

AXES = {
    "format": ("npz", "parquet"),
    "storage": STORAGES,
    "keep_topk": (False, True),
    "teachers": (1, 2),
    "augment": ("none", "cifar"),
    "sample": ("rgb", "tensor"),
    "targets": ("logits", "logits,embedding", "embedding"),
    "labels": ("labelled", "unlabelled"),
}


def allowed(cell: dict) -> bool:
    if cell["sample"] == "tensor" and cell["augment"] != "none":
        return False
    if cell["targets"] == "embedding" and (cell["storage"] != "logits" or cell["keep_topk"]):
        return False  # no logits stored: no storage mode, nothing to keep
    return not (cell["keep_topk"] and cell["storage"] != "topk")  # refused: full logits stored


CELLS = pairwise(AXES, allowed)


def cell_id(cell: dict) -> str:
    return "-".join(f"{axis}={cell[axis]}" for axis in AXES)


def export(path, cell: dict, out):
    """Export through the command line; the arrays and metadata read back."""
    if cell["format"] == "parquet":
        pytest.importorskip("pyarrow")
    args = ["export", str(path), "--format", cell["format"], "--out", str(out)]
    result = CliRunner().invoke(main, args + (["--keep-topk"] if cell["keep_topk"] else []))
    assert result.exit_code == 0, result.output
    return (read_npz if cell["format"] == "npz" else read_parquet)(out)


@pytest.mark.parametrize("cell", [pytest.param(c, id=cell_id(c)) for c in CELLS])
def test_an_export_holds_the_cache(cell, world, cache_for, tmp_path):
    labelled = cell["labels"] == "labelled"
    kind = Kind(cell["sample"], cell["augment"], cell["storage"], cell["teachers"], cell["targets"], labelled)
    path = cache_for(kind)
    arrays, meta = export(path, cell, tmp_path / f"export.{cell['format']}")
    keys, labels = store.read_keys_labels(path)
    info = store.read_info(path)
    assert list(arrays["keys"]) == keys and np.array_equal(arrays["labels"], labels)
    if "classes" in arrays:
        assert list(arrays["classes"]) == info.classes
    targets = store.CacheTargets(path)
    with h5py.File(path, "r") as file:
        if cell["keep_topk"] and cell["storage"] != "logits":
            for name, values in stored_arrays(file, info).items():
                assert name in arrays, f"{name} missing from the export ({sorted(arrays)})"
                np.testing.assert_array_equal(np.asarray(arrays[name]).reshape(values.shape), values, err_msg=name)
        elif "logits" in kind.targets:
            dense = np.stack([targets.logits(i, None) for i in range(len(keys))])
            np.testing.assert_array_equal(np.asarray(arrays["logits"], dtype=np.float32).reshape(dense.shape), dense)
        else:
            assert "logits" not in arrays, "an export of embeddings alone made up logits"
        if "embedding" in kind.targets:
            stored = np.stack([targets.embeddings(i, None) for i in range(len(keys))])
            exported = np.asarray(arrays["embeddings"], dtype=np.float32).reshape(stored.shape)
            np.testing.assert_array_equal(exported, stored)
        if info.layout.param_names:
            params = np.stack([targets.params(i) for i in range(len(keys))])
            np.testing.assert_array_equal(np.asarray(arrays["view_params"]).reshape(params.shape), params)
        if "samples/sha256" in file:
            assert arrays["sha256"] == [bytes(d).hex() for d in file["samples/sha256"][:]]
    assert meta["num_views"] == kind.views and meta["storage"] == cell["storage"]


@pytest.mark.parametrize("form", AXES["format"])
def test_an_export_of_several_teachers_names_each(form, world, cache_for, tmp_path):
    kind = Kind("rgb", "cifar", "logits", 2)
    _, meta = export(cache_for(kind), {"format": form, "keep_topk": False}, tmp_path / f"export.{form}")
    named = json.dumps(meta)
    for _, weights in world.teachers(kind.sample, kind.teachers):
        assert weights.rsplit("/", 1)[-1] in named, f"the export's metadata does not name teacher {weights}"


def stored_arrays(file: h5py.File, info) -> dict[str, np.ndarray]:
    """The mode's stored datasets, under the names an export gives them (docs/FORMAT.md)."""
    group = file[info.layout.storage]
    return {f"{info.layout.storage}_{name}": group[name][:] for name in group}


def read_npz(path):
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["sha256"] = [bytes(d).hex() for d in arrays.get("sample_sha256", [])]
    return arrays, json.loads(str(arrays["metadata"]))


def read_parquet(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    arrays = {"keys": table["key"].to_pylist(), "labels": np.array(table["label"].to_pylist())}
    for name in table.column_names:
        if name not in ("key", "label", "sha256"):
            arrays[name] = np.array(table[name].to_pylist())
    arrays["sha256"] = table["sha256"].to_pylist() if "sha256" in table.column_names else []
    return arrays, json.loads(pq.read_schema(path).metadata[b"softlabels"])
