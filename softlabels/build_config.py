"""`BuildConfig`: every option of `softlabels build`, in groups (what a resume must agree on is every
group but `runtime`), and `BuildResult`, what a build reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from softlabels.options import Options
from softlabels.runtime import default_workers

DEFAULT_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class BuildData:
    """Which samples: the dataset, its split, and the rows of one shard (None: all)."""

    dataset: str
    split: str = "train"
    data_root: str = "data"
    download: bool = False
    shard: tuple[int, int] | None = None


@dataclass(frozen=True)
class BuildModel:
    """The teachers (one, or several run on the same views), their weights and input overrides, and
    their precision. `teacher` and `weights` take one value or a tuple, paired in order."""

    teacher: str | tuple[str, ...] | None = None  # None: the spec the weights record (`trainer fit` weights)
    weights: str | tuple[str, ...] | None = None
    num_classes: int | None = None
    trust_checkpoint: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None
    amp: bool = True

    @property
    def members(self) -> list[tuple[str | None, str | None]]:
        """(spec, weights) of every teacher, in order."""
        specs, weights = _many(self.teacher), _many(self.weights)
        count = max(len(specs), len(weights), 1)
        specs = specs or (None,) * count
        weights = weights or (None,) * count
        if len(specs) != len(weights):
            raise ValueError(
                f"give one --weights per --teacher, in the same order: {len(specs)} teachers, {len(weights)} weights"
            )
        return list(zip(specs, weights))


def _many(value) -> tuple:
    if value is None or value == ():
        return ()
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


@dataclass(frozen=True)
class BuildViews:
    """How many views per sample, made by which augmentation, drawn from which seed."""

    views: int = 1
    augment: str = "none"
    seed: int = 0


@dataclass(frozen=True)
class BuildStorage:
    """How targets are stored."""

    storage: str | None = None  # a storage mode (softlabels.store.modes); None: topk with --topk, else logits
    dtype: str = "float16"
    topk: int | None = None
    compression: str = "none"
    block_rows: int | None = None

    @property
    def mode(self) -> str:
        """The storage mode (softlabels.store.modes) these options ask for."""
        return self.storage or ("topk" if self.topk else "logits")


@dataclass(frozen=True)
class BuildRuntime:
    """Where and how fast the pass runs, and what to do with existing files."""

    batch_size: int = 128
    workers: int = field(default_factory=default_workers)
    threads: int | None = None  # CPU intra-op threads; None: cores left free by the workers
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    stop_signals: bool = True  # SIGTERM/SIGUSR1 stop the pass at the next block (softlabels.stopping)


@dataclass(frozen=True)
class BuildConfig(Options):
    """Everything `softlabels build` needs; `BuildConfig.from_options(**flat)` fills it from flat options."""

    out: str
    data: BuildData
    model: BuildModel
    augmentation: BuildViews = field(default_factory=BuildViews)
    storage: BuildStorage = field(default_factory=BuildStorage)
    runtime: BuildRuntime = field(default_factory=BuildRuntime)

    @property
    def block_rows(self) -> int:
        """Rows per checksum block: about 1024, a multiple of the batch size, unless given."""
        batch = self.runtime.batch_size
        return self.storage.block_rows or batch * max(1, DEFAULT_BLOCK_ROWS // batch)


@dataclass
class BuildResult:
    path: Path
    num_samples: int
    num_views: int
    teacher_accuracy: float
    seconds: float
    images_per_second: float  # teacher inputs a second: views (images x --views) of the rows this run computed
    resumed_from: int = 0

    def to_dict(self) -> dict:
        """What `softlabels build --json` prints."""
        return {
            "path": str(self.path),
            "num_samples": self.num_samples,
            "num_views": self.num_views,
            "teacher_accuracy": self.teacher_accuracy,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "resumed_from": self.resumed_from,
        }
