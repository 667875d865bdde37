"""`softlabels export`: a cache as plain numpy arrays in one `.npz` file, for tools that do not read HDF5.

    data = np.load("cache.npz")                    # no pickle needed: every array is numeric or text
    X_keys, y = data["keys"], data["labels"]
    logits = data["logits"][:, 0]                  # (N, C) teacher logits of view 0
    meta = json.loads(str(data["metadata"]))       # teacher, dataset, preprocessing, augment, ...

Arrays: `keys` (N,) str, `labels` (N,) int64, `classes` (C,) str, then either `logits` (N, V, C)
float32 (top-k caches expanded as in docs/FORMAT.md) or, with `keep_topk`, `topk_values` (N, V, K)
float32, `topk_indices` (N, V, K) int64 and `topk_logsumexp` (N, V) float32; `view_params` (N, V, P)
int32 and `view_param_names` (P,) str when views are augmented; `metadata`, a JSON string.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from softlabels import store

FORMATS = ("npz",)


def export_npz(path, out, keep_topk: bool = False, compress: bool = False, overwrite: bool = False) -> Path:
    """Write a complete cache's arrays to `out` (written to a temporary name, then renamed)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    info = store.read_complete_info(path)
    if keep_topk and info.layout.storage != "topk":
        raise ValueError(f"{path} stores full logits: --keep-topk only applies to top-k caches")
    arrays = export_arrays(path, info, keep_topk)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as file:  # a file object: numpy would otherwise append `.npz` to the name
        if compress:
            np.savez_compressed(file, **arrays)  # type: ignore[arg-type]
        else:
            np.savez(file, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, out)
    return out


def export_arrays(path, info: store.CacheInfo, keep_topk: bool = False) -> dict[str, np.ndarray]:
    """The arrays `export_npz` writes, gathered block by block."""
    keys, labels = store.read_keys_labels(path)
    layout = info.layout
    out = {
        "keys": np.array(keys, dtype=str),
        "labels": labels.astype(np.int64),
        "classes": np.array(info.classes, dtype=str),
    }
    rows = store.Rows.concat([rows for _, _, _, rows in store.iter_rows(path)])
    if keep_topk:
        out.update(layout.mode.export(rows.targets))
    else:
        out["logits"] = rows.dense()
    if layout.param_names:
        out["view_params"] = np.asarray(rows.params, dtype=np.int32)
        out["view_param_names"] = np.array(layout.param_names, dtype=str)
    out["metadata"] = np.array(json.dumps(_metadata(info), sort_keys=True))
    return out


def _metadata(info: store.CacheInfo) -> dict:
    layout = info.layout
    attrs = info.meta.to_attrs()
    return {
        "source": str(info.path),
        "format_version": info.format_version,
        "created": info.attrs.get("created"),
        "softlabels_version": info.attrs.get("softlabels_version"),
        "teacher": attrs["teacher"],
        "dataset": {k: v for k, v in attrs["dataset"].items() if k != "classes"},
        "preprocessing": attrs.get("preprocessing"),
        "augment": attrs["augment"],
        "view_seeds": info.view_seeds,
        "storage": layout.storage,
        "dtype": layout.dtype,
        "topk": layout.topk,
        "teacher_accuracy": info.teacher_accuracy,
    }
