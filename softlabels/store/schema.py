"""The cache's schema without HDF5: constants, the layout of the per-sample data, and the typed
metadata records that the JSON attributes are parsed into once (docs/FORMAT.md, "Root attributes").

Every record writes exactly the JSON it was read from (unknown keys from newer writers are kept in
`extra`), so a cache merged or resumed by this version carries its metadata unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from typing import Any, ClassVar

from softlabels.models.preprocessing import Preprocessing
from softlabels.store.embedding import EmbeddingCodec, parse_targets
from softlabels.store.modes import StorageMode, storage_mode

FORMAT_NAME = "softlabels"
FORMAT_VERSION = 3  # the newest this code reads and writes; each file is written as the oldest that holds it
PARTIAL_SUFFIX = ".partial"
DTYPES = ("float16", "float32")
COMPRESSIONS = ("none", "lzf", "gzip")


class CacheError(ValueError):
    """A cache file is missing, malformed, incomplete, corrupt or untrusted."""


# The label of a sample that has none (an unlabelled dataset), in memory; an unlabelled cache stores
# no `labels` dataset at all (docs/FORMAT.md, "Unlabelled caches").
NO_LABEL = -1


def dataset_fingerprint(keys: Sequence[str], labels: Iterable[int]) -> str:
    """sha256 over `key TAB label NEWLINE` for every sample, in order; a sample without a label
    (`NO_LABEL`) contributes `key TAB NEWLINE` (an empty label)."""
    digest = hashlib.sha256()
    for key, label in zip(keys, labels):
        text = "" if int(label) == NO_LABEL else str(int(label))
        digest.update(f"{key}\t{text}\n".encode())
    return "sha256:" + digest.hexdigest()


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Shapes and encodings of a cache's per-sample data; `mode` is the storage mode's codec."""

    num_samples: int
    num_classes: int
    num_views: int = 1
    storage: str = "logits"
    dtype: str = "float16"
    topk: int | None = None
    param_names: tuple[str, ...] = ()
    compression: str = "none"
    block_rows: int = 1024
    num_teachers: int = 1
    sample_digests: bool = False  # a SHA-256 of every sample's source bytes (`samples/sha256`)
    targets: tuple[str, ...] = ("logits",)  # the target kinds stored (softlabels.store.embedding)
    embedding_dim: int = 0  # with `embedding` in targets: its width D
    embedding_dtype: str = "float16"
    labelled: bool = True  # False: the dataset has no labels, and the file no `labels` dataset

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError("a cache needs at least one sample")
        if self.num_classes < 1 or self.num_views < 1 or self.block_rows < 1 or self.num_teachers < 1:
            raise ValueError("num_classes, num_views, num_teachers and block_rows must be positive")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {self.compression!r}; choose one of: {', '.join(COMPRESSIONS)}")
        _ = self.mode  # validates the storage mode and its settings
        if parse_targets(self.targets) != tuple(self.targets):
            raise ValueError(f"target kinds {self.targets!r} are not in canonical order")
        if ("embedding" in self.targets) != (self.embedding_dim > 0):
            raise ValueError("an embedding dimension is given exactly when embeddings are stored")
        _ = self.embedding  # validates the embedding encoding

    @property
    def has_logits(self) -> bool:
        return "logits" in self.targets

    @cached_property
    def embedding(self) -> EmbeddingCodec | None:
        """The embeddings' codec (softlabels.store.embedding), or None when the cache stores none."""
        return EmbeddingCodec(self.embedding_dim, self.embedding_dtype) if self.embedding_dim else None

    @cached_property
    def mode(self) -> StorageMode:
        """The storage mode's codec (softlabels.store.modes) for this layout."""
        return storage_mode(self.storage, self.num_classes, self.dtype, self.topk)

    @property
    def rows(self) -> tuple[int, ...]:
        """Leading axes of every target dataset: (N, V), or (N, V, M) with M > 1 teachers."""
        base = (self.num_samples, self.num_views)
        return base if self.num_teachers == 1 else (*base, self.num_teachers)

    @property
    def format_version(self) -> int:
        """The oldest version that holds this layout, so older readers read every file they can and refuse
        the rest by version rather than by a missing dataset or a checksum they cannot recompute: 3 for
        embeddings or no labels, 2 for several teachers, else 1."""
        if "embedding" in self.targets or not self.labelled:
            return 3
        return 1 if self.num_teachers == 1 else 2

    @property
    def num_blocks(self) -> int:
        return -(-self.num_samples // self.block_rows)

    def block_range(self, block: int) -> tuple[int, int]:
        start = block * self.block_rows
        return start, min(start + self.block_rows, self.num_samples)

    def replace(self, **changes) -> Layout:
        return Layout(**{**self.fields(), **changes})

    def fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(Layout)}

    @property
    def bytes_per_view(self) -> int:
        """Stored target bytes of one view (view parameters not included): logits and embeddings."""
        logits = self.mode.bytes_per_view if self.has_logits else 0
        return logits + (self.embedding.bytes_per_view if self.embedding else 0)

    @property
    def target_bytes(self) -> int:
        """Bytes of every stored target and view parameter of the cache."""
        per_view = self.bytes_per_view * self.num_teachers + 4 * len(self.param_names)
        return self.num_samples * self.num_views * per_view


# ----------------------------------------------------------------------------- metadata records


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Record:
    """A JSON attribute as a frozen dataclass: `from_dict` parses, `to_dict` writes the same JSON back."""

    extra: dict = field(default_factory=dict, compare=False, repr=False, kw_only=True)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()  # keys written only when not None

    @classmethod
    def from_dict(cls, data: dict | None):
        data = dict(data or {})
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: _tuple(v) for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def to_dict(self) -> dict:
        out = {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if not (k in self.OPTIONAL and v is None)}
        return {**self.extra, **out}


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class TeacherRecord(Record):
    """Who made the targets: spec, weights (path as given, file name, SHA-256) and model size."""

    spec: str | None = None
    weights: str | None = None
    weights_name: str | None = None
    weights_sha256: str | None = None
    num_params: int | None = None
    model_class: str | None = None
    name: str | None = None  # members of a several-teacher cache: a unique name,
    input: dict | None = None  # and the input (normalisation) each one takes
    num_classes: int | None = None  # 0: built as an encoder without its classifier (`--num-classes 0`)
    OPTIONAL: ClassVar[tuple[str, ...]] = ("name", "input", "num_classes")

    def identity(self) -> tuple:
        """What names one teacher across machines (a weights path may differ)."""
        return self.spec, self.weights_sha256, self.num_params


@dataclass(frozen=True)
class DatasetRecord(Record):
    """Which samples: the dataset spec, split, resolved root, size, class names and fingerprint."""

    spec: str | None = None
    split: str = "train"
    root: str | None = None
    num_samples: int | None = None
    classes: tuple[str, ...] | None = None
    fingerprint: str | None = None
    digests: str | None = None  # what `samples/sha256` hashes: "sha256 of file bytes" or "... of decoded samples"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("spec", "root", "num_samples", "classes", "fingerprint", "digests")

    def identity(self) -> tuple:
        """What names the samples (the root may be spelled differently on another machine)."""
        return self.spec, self.split, self.fingerprint

    def class_names(self, num_classes: int) -> list[str]:
        return list(self.classes) if self.classes else [str(c) for c in range(num_classes)]


@dataclass(frozen=True)
class AugmentRecord(Record):
    """How views were made: the augmentation, its seed(s), the view count and parameter names."""

    name: str = "none"
    seed: int = 0
    views: int = 1
    param_names: tuple[str, ...] = ()
    seeds: tuple[int, ...] | None = None  # merged view sets: the seed of every view
    param_dtypes: tuple[str, ...] | None = None  # when some parameters are float32 (stored bit for bit)
    source: str | None = None  # user augmentations: the FILE.py:NAME spec,
    source_sha256: str | None = None  # the SHA-256 of that file,
    repr: str | None = None  # and the repr of the object: its identity
    OPTIONAL: ClassVar[tuple[str, ...]] = ("seeds", "param_dtypes", "source", "source_sha256", "repr")

    def identity(self) -> dict:
        return {"source": self.source, "source_sha256": self.source_sha256, "repr": self.repr}

    def view_seeds(self, num_views: int) -> list[int]:
        """The `--seed` behind each of the V views."""
        return [int(s) for s in self.seeds] if self.seeds else [int(self.seed)] * num_views


@dataclass(frozen=True)
class BuildRecord(Record):
    """Build options that shaped the stored data."""

    dtype: str = "float16"
    storage: str = "logits"
    topk: int | None = None
    amp: bool = True
    compression: str = "none"
    targets: tuple[str, ...] | None = None  # None: logits only (every cache before embeddings)
    embedding_layer: str | None = None  # the module whose output is the embedding (None: the default)
    embedding_dtype: str | None = None
    OPTIONAL: ClassVar[tuple[str, ...]] = ("targets", "embedding_layer", "embedding_dtype")


@dataclass(frozen=True)
class ShardRecord(Record):
    """A shard file holds the dataset's rows [start, stop); `fingerprint` covers those rows alone."""

    index: int = 0
    count: int = 1
    start: int = 0
    stop: int = 0
    fingerprint: str | None = None


RECORDS: dict[str, type] = {
    "teacher": TeacherRecord,
    "dataset": DatasetRecord,
    "preprocessing": Preprocessing,
    "augment": AugmentRecord,
    "build": BuildRecord,
    "shard": ShardRecord,
}
JSON_ATTRS = (*RECORDS, "teachers")  # `teachers`: a list of TeacherRecord, in caches of several teachers


@dataclass(frozen=True)
class Metadata:
    """The JSON attributes of a cache, typed. `shard` is None except in shard files."""

    teacher: TeacherRecord = field(default_factory=TeacherRecord)
    dataset: DatasetRecord = field(default_factory=DatasetRecord)
    preprocessing: Preprocessing | None = None
    augment: AugmentRecord = field(default_factory=AugmentRecord)
    build: BuildRecord = field(default_factory=BuildRecord)
    shard: ShardRecord | None = None
    teachers: tuple[TeacherRecord, ...] | None = None  # every member, when there are several

    def to_attrs(self) -> dict[str, Any]:
        """name -> JSON-able value, for every record present."""
        out: dict[str, Any] = {
            name: getattr(self, name).to_dict() for name in RECORDS if getattr(self, name) is not None
        }
        if self.teachers:
            out["teachers"] = [member.to_dict() for member in self.teachers]
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Metadata:
        """Parse the JSON attributes; `preprocessing` and `shard` stay None where absent or empty."""

        def optional(name):
            return RECORDS[name].from_dict(attrs[name]) if attrs.get(name) else None

        return cls(
            teacher=TeacherRecord.from_dict(attrs.get("teacher")),
            dataset=DatasetRecord.from_dict(attrs.get("dataset")),
            preprocessing=optional("preprocessing"),
            augment=AugmentRecord.from_dict(attrs.get("augment")),
            build=BuildRecord.from_dict(attrs.get("build")),
            shard=optional("shard"),
            teachers=tuple(TeacherRecord.from_dict(m) for m in attrs["teachers"]) if attrs.get("teachers") else None,
        )

    def replace(self, **changes) -> Metadata:
        return Metadata(**{**{name: getattr(self, name) for name in (*RECORDS, "teachers")}, **changes})


@dataclass(frozen=True)
class CacheInfo:
    """Everything about a cache except its per-sample data (read once, small, picklable)."""

    path: str
    layout: Layout
    complete: bool
    meta: Metadata
    attrs: dict = field(default_factory=dict)  # the plain root attributes (format_version, created, ...)

    # the records, as attributes of the info itself
    @property
    def teacher(self) -> TeacherRecord:
        return self.meta.teacher

    @property
    def dataset(self) -> DatasetRecord:
        return self.meta.dataset

    @property
    def preprocessing(self) -> Preprocessing | None:
        return self.meta.preprocessing

    @property
    def input(self) -> Preprocessing:
        """The model input the targets were computed on (what views are replayed at)."""
        if self.meta.preprocessing is None:
            raise CacheError(f"{self.path} records no preprocessing: its views cannot be replayed")
        return self.meta.preprocessing

    @property
    def augment(self) -> AugmentRecord:
        return self.meta.augment

    @property
    def build(self) -> BuildRecord:
        return self.meta.build

    @property
    def shard(self) -> ShardRecord | None:
        return self.meta.shard

    @property
    def members(self) -> tuple[TeacherRecord, ...]:
        """The teachers whose outputs the cache holds, in the order of its member axis."""
        return self.meta.teachers or (self.meta.teacher,)

    @property
    def member_names(self) -> list[str]:
        return [m.name or m.spec or f"teacher{i}" for i, m in enumerate(self.members)]

    @property
    def member_accuracy(self) -> list[float | None]:
        values = self.attrs.get("member_accuracy")
        if values is None:
            return [self.teacher_accuracy]
        return [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values]

    @property
    def fingerprint(self) -> str | None:
        return self.dataset.fingerprint

    @property
    def classes(self) -> list[str]:
        return self.dataset.class_names(self.layout.num_classes)

    @property
    def view_seeds(self) -> list[int]:
        return self.augment.view_seeds(self.layout.num_views)

    @property
    def teacher_accuracy(self) -> float | None:
        value = self.attrs.get("teacher_accuracy")
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    @property
    def format_version(self) -> int | None:
        return self.attrs.get("format_version")

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "layout": asdict(self.layout),
            "complete": self.complete,
            **self.meta.to_attrs(),
            "attrs": dict(self.attrs),
        }


def as_json_value(value: Any) -> Any:
    """Records and tuples as plain JSON values."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return _plain(value)
