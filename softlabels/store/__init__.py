"""The cache store: the only code that knows HDF5 (spec: docs/FORMAT.md).

- `schema`: constants, `Layout`, the typed metadata records and `CacheInfo` (no HDF5);
- `modes`: one class per storage mode, owning its datasets (`logits`, `topk`);
- `rows`: `Rows`, stored per-sample data as everyone else sees it;
- `writer`: the crash-safe `CacheWriter`; `reader`: `read_info`, `iter_rows`, `CacheTargets` (one
  handle for the check and the reads, identity checked on every reopen, checksums checked on load);
- `checking`: header, trust, structure and full integrity checks (`verify`);
- `files`: dataset paths, attributes, checksums, a file's identity, opening paths and fsspec URLs.

Names are imported on first use: reading a cache's metadata (`softlabels info`) or a storage mode's
names (`--help`) does not load the writer and the readers of the rows.
"""

from __future__ import annotations

from softlabels.lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "CheckStats": "softlabels.store.checking",
    "check_file": "softlabels.store.checking",
    "verify": "softlabels.store.checking",
    "file_size": "softlabels.store.files",
    "is_url": "softlabels.store.files",
    "open_cache_file": "softlabels.store.files",
    "partial_path": "softlabels.store.files",
    "short_reason": "softlabels.store.files",
    "MODES": "softlabels.store.modes",
    "STORAGES": "softlabels.store.modes",
    "NonFiniteOutputs": "softlabels.store.modes",
    "StorageMode": "softlabels.store.modes",
    "storage_mode": "softlabels.store.modes",
    "CacheTargets": "softlabels.store.reader",
    "iter_rows": "softlabels.store.reader",
    "looks_like_cache": "softlabels.store.reader",
    "read_complete_info": "softlabels.store.reader",
    "read_digests": "softlabels.store.reader",
    "read_info": "softlabels.store.reader",
    "read_keys_labels": "softlabels.store.reader",
    "rows_written": "softlabels.store.reader",
    "Rows": "softlabels.store.rows",
    "COMPRESSIONS": "softlabels.store.schema",
    "DTYPES": "softlabels.store.schema",
    "FORMAT_VERSION": "softlabels.store.schema",
    "NO_LABEL": "softlabels.store.schema",
    "PARTIAL_SUFFIX": "softlabels.store.schema",
    "AugmentRecord": "softlabels.store.schema",
    "BuildRecord": "softlabels.store.schema",
    "CacheError": "softlabels.store.schema",
    "CacheInfo": "softlabels.store.schema",
    "DatasetRecord": "softlabels.store.schema",
    "Layout": "softlabels.store.schema",
    "Metadata": "softlabels.store.schema",
    "ShardRecord": "softlabels.store.schema",
    "TeacherRecord": "softlabels.store.schema",
    "dataset_fingerprint": "softlabels.store.schema",
    "index_dtype": "softlabels.store.modes",
    "CacheWriter": "softlabels.store.writer",
    "PartialInUse": "softlabels.store.writer",
    "close_quietly": "softlabels.store.writer",
    "layout_bytes": "softlabels.store.writer",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
