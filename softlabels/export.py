"""`softlabels export`: a cache as plain arrays for tools that do not read HDF5.

npz (numpy, scikit-learn):

    data = np.load("cache.npz")                    # no pickle needed: every array is numeric or text
    X_keys, y = data["keys"], data["labels"]
    logits = data["logits"][:, 0]                  # (N, C) teacher logits of view 0
    meta = json.loads(str(data["metadata"]))       # teacher, dataset, preprocessing, augment, ...

Arrays: `keys` (N,) str, `labels` (N,) int64, `classes` (C,) str, then either `logits` (N, V, C)
(N, V, M, C for M teachers, named in order by the metadata's `teachers`) float32 (top-k caches
expanded as in docs/FORMAT.md) or, with `keep_topk`, `topk_values` (N, V, K)
float32, `topk_indices` (N, V, K) int64 and `topk_logsumexp` (N, V) float32 (a `quant8 --topk K`
cache: `quant8_values`, `quant8_scale`, `quant8_indices`, `quant8_logsumexp`); `view_params` (N, V, P)
int32 and `view_param_names` (P,) str when views are augmented; `sample_sha256` (N, 32) uint8 where
the cache has sample digests; `metadata`, a JSON string.

Parquet (pyarrow; Hugging Face `datasets`, pandas, polars, DuckDB), one row per sample, written one
row group per block (memory stays bounded):

    ds = datasets.load_dataset("parquet", data_files="cache.parquet", split="train")
    ds.features["label"].names                     # the class names (a ClassLabel)
    meta = json.loads(pyarrow.parquet.read_schema("cache.parquet").metadata[b"softlabels"])

Columns: `key` string, `label` int64, `logits` (V lists of C float32) or the three top-k columns,
`view_params` (V lists of P int32), `sha256` (hex string). The schema metadata carries `softlabels`
(the same JSON as the npz `metadata`) and `huggingface` (features: `label` as a ClassLabel).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softlabels import progress, store
from softlabels.extras import install_hint

FORMATS = ("npz", "parquet")


@dataclass(frozen=True)
class ExportConfig:
    """Options of `softlabels export`."""

    format: str = "npz"
    keep_topk: bool = False
    compress: bool = False
    overwrite: bool = False
    progress: bool = True


def export_cache(path, out, config: ExportConfig = ExportConfig()) -> dict:
    """Write a complete cache to `out` in `config.format` (a temporary name, then renamed).

    Returns {"path", "format", "rows", "bytes"}."""
    if config.format not in FORMATS:
        raise ValueError(f"unknown export format {config.format!r}; choose one of: {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and not config.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output directory {out.parent} does not exist")
    info = store.read_complete_info(path)
    if config.keep_topk and not info.layout.topk:  # topk, or quant8 --topk K: the K kept classes are stored
        raise ValueError(
            f"{path} stores every class ({info.layout.storage}): --keep-topk only applies to caches built with --topk"
        )
    write = _write_parquet if config.format == "parquet" else _write_npz
    tmp = out.with_name(out.name + ".tmp")
    try:
        write(path, info, tmp, config)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(out), "format": config.format, "rows": info.layout.num_samples, "bytes": out.stat().st_size}


def export_npz(path, out, keep_topk: bool = False, compress: bool = False, overwrite: bool = False) -> Path:
    """Write a complete cache's arrays to `out` as npz."""
    export_cache(path, out, ExportConfig("npz", keep_topk, compress, overwrite, progress=False))
    return Path(out)


# ----------------------------------------------------------------------------- npz


def _write_npz(path, info: store.CacheInfo, tmp: Path, config: ExportConfig) -> None:
    arrays = export_arrays(path, info, config.keep_topk, config.progress)
    with open(tmp, "wb") as file:  # a file object: numpy would otherwise append `.npz` to the name
        if config.compress:
            np.savez_compressed(file, **arrays)
        else:
            np.savez(file, **arrays)


def export_arrays(path, info: store.CacheInfo, keep_topk: bool = False, show_progress: bool = False) -> dict:
    """The arrays the npz holds, gathered block by block."""
    keys, labels = store.read_keys_labels(path)
    layout = info.layout
    out = {
        "keys": np.array(keys, dtype=str),
        "labels": labels.astype(np.int64),
        "classes": np.array(info.classes, dtype=str),
    }
    rows = store.Rows.concat([rows for _, _, _, rows in _blocks(path, info, show_progress)])
    out.update(target_arrays(rows, layout, keep_topk))
    if layout.param_names:
        out["view_params"] = np.asarray(rows.params, dtype=np.int32)
        out["view_param_names"] = np.array(layout.param_names, dtype=str)
    if rows.digests is not None:
        out["sample_sha256"] = rows.digests
    out["metadata"] = np.array(json.dumps(metadata(info), sort_keys=True))
    return out


def target_arrays(rows: store.Rows, layout: store.Layout, keep_topk: bool) -> dict[str, np.ndarray]:
    """The stored targets under plain names: `logits` (or the mode's own arrays with --keep-topk) and,
    where the cache stores them, `embeddings` (float32)."""
    out: dict[str, np.ndarray] = {}
    if layout.has_logits:
        out = layout.mode.export(rows.logit_targets) if keep_topk else {"logits": rows.dense()}
    if layout.embedding is not None:
        out.update(layout.embedding.export(rows.targets))
    return out


def _blocks(path, info: store.CacheInfo, show_progress: bool):
    bar = progress.bar(total=info.layout.num_samples, desc="exporting", unit="row", enabled=show_progress)
    try:
        for start, stop, labels, rows in store.iter_rows(path):
            yield start, stop, labels, rows
            bar.update(stop - start)
    finally:
        bar.close()


def metadata(info: store.CacheInfo) -> dict:
    """What an export says about its cache (the npz `metadata`, the parquet `softlabels` key)."""
    layout = info.layout
    attrs = info.meta.to_attrs()
    return {
        "source": str(info.path),
        "format_version": info.format_version,
        "created": info.attrs.get("created"),
        "softlabels_version": info.attrs.get("softlabels_version"),
        "build_id": info.attrs.get("build_id"),
        "teacher": attrs["teacher"],
        "dataset": {k: v for k, v in attrs["dataset"].items() if k != "classes"},
        "classes": info.classes,
        "preprocessing": attrs.get("preprocessing"),
        "augment": attrs["augment"],
        "view_seeds": info.view_seeds,
        "storage": layout.storage,
        "dtype": layout.dtype,
        "topk": layout.topk,
        "num_views": layout.num_views,
        "num_teachers": layout.num_teachers,
        "view_param_names": list(layout.param_names),
        "teacher_accuracy": info.teacher_accuracy,
        # the teacher axis M of a several-teacher cache (logits (N, V, M, C)), labelled in its order
        "teachers": [
            {**record.to_dict(), "name": name, "accuracy": accuracy}
            for record, name, accuracy in zip(info.members, info.member_names, info.member_accuracy)
        ],
    }


# ----------------------------------------------------------------------------- parquet


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"--format parquet needs pyarrow: {install_hint('parquet')}") from None
    return pa, pq


def _write_parquet(path, info: store.CacheInfo, tmp: Path, config: ExportConfig) -> None:
    pa, pq = _pyarrow()
    keys, _ = store.read_keys_labels(path)
    writer = None
    try:
        for start, stop, labels, rows in _blocks(path, info, config.progress):
            table = _table(pa, keys[start:stop], labels, rows, info, config.keep_topk)
            if writer is None:
                schema = table.schema.with_metadata(_schema_metadata(info))
                writer = pq.ParquetWriter(tmp, schema, compression="zstd" if config.compress else "none")
            writer.write_table(table.replace_schema_metadata(writer.schema.metadata))
    finally:
        if writer is not None:
            writer.close()


def _table(pa, keys, labels, rows: store.Rows, info: store.CacheInfo, keep_topk: bool):
    columns = {"key": pa.array(keys, pa.string()), "label": pa.array(labels.astype(np.int64))}
    for name, value in target_arrays(rows, info.layout, keep_topk).items():
        columns[name] = _nested(pa, value)
    if rows.params is not None:
        columns["view_params"] = _nested(pa, np.asarray(rows.params, dtype=np.int32))
    if rows.digests is not None:
        columns["sha256"] = pa.array([bytes(d).hex() for d in rows.digests], pa.string())
    return pa.table(columns)


def _nested(pa, value: np.ndarray):
    """An (n, a, b, ...) array as n rows of fixed-size lists (of lists ...)."""
    flat = pa.array(np.ascontiguousarray(value).reshape(-1))
    for size in reversed(value.shape[1:]):
        flat = pa.FixedSizeListArray.from_arrays(flat, int(size))
    return flat


def _schema_metadata(info: store.CacheInfo) -> dict[bytes, bytes]:
    features = {"label": {"_type": "ClassLabel", "names": list(info.classes)}}
    return {
        b"softlabels": json.dumps(metadata(info), sort_keys=True).encode(),
        b"huggingface": json.dumps({"info": {"features": features}}).encode(),
    }
