"""The cache store: the only code that knows HDF5 (spec: docs/FORMAT.md).

- `schema`: constants, `Layout`, the typed metadata records and `CacheInfo` (no HDF5);
- `modes`: one class per storage mode, owning its datasets (`logits`, `topk`);
- `rows`: `Rows`, stored per-sample data as everyone else sees it;
- `writer`: the crash-safe `CacheWriter`; `reader`: `read_info`, `iter_rows`, `CacheTargets` (one
  handle for the check and the reads, identity checked on every reopen, checksums checked on load);
- `checking`: header, trust, structure and full integrity checks (`verify`);
- `files`: dataset paths, attributes, checksums, a file's identity, opening paths and fsspec URLs.
"""

from softlabels.store.checking import CheckStats, check_file, verify
from softlabels.store.files import file_size, is_url, open_cache_file, partial_path, short_reason
from softlabels.store.modes import MODES, STORAGES, NonFiniteOutputs, StorageMode, index_dtype, storage_mode
from softlabels.store.reader import (
    CacheTargets,
    iter_rows,
    looks_like_cache,
    read_complete_info,
    read_digests,
    read_info,
    read_keys_labels,
    rows_written,
)
from softlabels.store.rows import Rows
from softlabels.store.schema import (
    COMPRESSIONS,
    DTYPES,
    FORMAT_VERSION,
    PARTIAL_SUFFIX,
    AugmentRecord,
    BuildRecord,
    CacheError,
    CacheInfo,
    DatasetRecord,
    Layout,
    Metadata,
    ShardRecord,
    TeacherRecord,
    dataset_fingerprint,
)
from softlabels.store.writer import CacheWriter, PartialInUse, close_quietly, layout_bytes

__all__ = [
    "CheckStats",
    "check_file",
    "verify",
    "file_size",
    "is_url",
    "open_cache_file",
    "partial_path",
    "short_reason",
    "MODES",
    "STORAGES",
    "NonFiniteOutputs",
    "StorageMode",
    "storage_mode",
    "CacheTargets",
    "iter_rows",
    "looks_like_cache",
    "read_complete_info",
    "read_digests",
    "read_info",
    "read_keys_labels",
    "rows_written",
    "Rows",
    "COMPRESSIONS",
    "DTYPES",
    "FORMAT_VERSION",
    "PARTIAL_SUFFIX",
    "AugmentRecord",
    "BuildRecord",
    "CacheError",
    "CacheInfo",
    "DatasetRecord",
    "Layout",
    "Metadata",
    "ShardRecord",
    "TeacherRecord",
    "dataset_fingerprint",
    "index_dtype",
    "CacheWriter",
    "PartialInUse",
    "close_quietly",
    "layout_bytes",
]
