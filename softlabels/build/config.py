"""`BuildConfig`: every option of `softlabels build`, in groups (what a resume must agree on is every
group but `runtime`), and `BuildResult`, what a build reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click

from softlabels.options import (
    Deferred,
    Options,
    amp_option,
    count,
    data_root_option,
    declare,
    deferred,
    device_option,
    download_option,
    floats,
    names,
    option,
    threads_option,
    trust_checkpoint_option,
    workers_option,
)
from softlabels.store.embedding import EMBEDDING_DTYPES, parse_targets
from softlabels.store.modes import MODES
from softlabels.store.schema import COMPRESSIONS, DTYPES

DEFAULT_BLOCK_ROWS = 1024

# Each stored view seen more often than this, with no augmentation, overfits the fixed targets. Measured
# with small_cnn on CIFAR-10, 3 seeds (BENCHMARKS.md, "Where caches teach best"): 10 uses of one view is
# as good as any arm (10k images x 10 epochs), and 15 uses still ties 16 replayed views (5k x 15); 20
# uses of each of 4 replayed views (1k x 80) falls 9 points under 16 views; 30 uses of one view (5k x
# 30) trails 16 replayed views by 5-10; 80 uses collapses. Images only: that is where it was measured,
# and where an augmentation is the way out. `--views` advises from it; `trainer fit` warns past it.
SAFE_VIEW_USES = 15

DATASETS_HELP = "cifar10, cifar100, mnist, fashion-mnist, imagefolder:PATH or FILE.py:FUNC"
# Help texts list what the registries hold, looked up when a help text is shown (their modules import torch).
MODEL_FORMS = deferred(
    "softlabels.models.registry:SOURCES", lambda sources: ", ".join(s.form for s in sources if s.form)
)
AUGMENT_NAMES = deferred("softlabels.views:AUGMENTS", names)
MIX_FORMS = deferred("softlabels.views.mixed:MIXES", lambda mixes: ", ".join(f"BASE+{kind}" for kind in mixes))


@dataclass(frozen=True)
class BuildData:
    """Which samples: the dataset, its split, and the rows of one shard (None: all)."""

    dataset: str = field(metadata=declare(help=f"{DATASETS_HELP}."))
    split: str = option("train", help="Dataset split (train/test; a sub-folder for imagefolder).")
    data_root: str = data_root_option()
    download: bool = download_option()
    shard: tuple[int, int] | None = option(
        None,
        type=str,
        metavar="I/N",
        help="Compute only shard I of N (contiguous rows) into --out; combine the shards with `softlabels merge`. "
        "Under torchrun the ranks shard by themselves.",
    )


@dataclass(frozen=True)
class BuildModel:
    """The teachers (one, or several run on the same views), their weights and input overrides, and
    their precision. `teacher` and `weights` take one value or a tuple, paired in order."""

    teacher: str | tuple[str, ...] | None = option(
        None,
        type=str,
        multiple=True,
        help=Deferred(
            lambda: (
                f"Teacher: {MODEL_FORMS}  [default: the model recorded by --weights from `trainer fit`]. "
                "Repeat it (with one --weights each, in order) to store several teachers' outputs on the same views."
            )
        ),
    )  # None: the spec the weights record (`trainer fit` weights)
    weights: str | tuple[str, ...] | None = option(
        None,
        type=str,
        multiple=True,
        help="Weights for the teacher: a checkpoint or .safetensors file (from `trainer fit`: it also says which "
        "model and input), or the source's own: DEFAULT, IMAGENET1K_V2, ... (torchvision), pretrained (timm).",
    )
    num_classes: int | None = option(
        None,
        type=count(0),
        help="Teacher output classes; 0: a timm encoder without its classifier (timm's num_classes=0), built "
        "with --targets embedding  [default: the dataset's class count; unlabelled: what the weights record]",
    )
    trust_checkpoint: bool = trust_checkpoint_option()
    mean: tuple[float, ...] | None = option(
        None, type=floats, help="Normalisation mean R,G,B (or one value for grey)  [default: teacher's, else dataset's]"
    )
    std: tuple[float, ...] | None = option(
        None, type=floats, help="Normalisation std R,G,B  [default: teacher's, else dataset's]"
    )
    image_size: int | None = option(
        None, type=count(1), help="Teacher input size  [default: teacher's, else dataset's]"
    )
    amp: bool = amp_option()

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

    views: int = option(
        1,
        type=count(1),
        help=f"Augmented views per sample (needs --augment). How many: about one per 5 epochs your students "
        f"will train (each view seen ~5 times). Up to ~10 epochs one view without augmentation teaches as well "
        f"as any; views seen more than {SAFE_VIEW_USES} times overfit; replay beat random augmentation of one "
        f"view by 3-4 points with random-resized crops (BENCHMARKS.md, 'Where caches teach best').",
    )
    augment: str = option("none", help=Deferred(lambda: f"{AUGMENT_NAMES}, {MIX_FORMS} or FILE.py:NAME (see below)."))
    seed: int = option(0, help="Seed of the view parameters.")


class Targets(click.ParamType):
    """`--targets`: logits, embedding or logits,embedding, in any order (a config file may give a list);
    given back in canonical order."""

    name = "KINDS"
    config_kinds = (str, list)

    def convert(self, value, param, ctx):
        try:
            return ",".join(parse_targets(value))
        except ValueError as error:
            self.fail(f"{value if isinstance(value, str) else ','.join(map(str, value))}: {error}", param, ctx)


@dataclass(frozen=True)
class BuildStorage:
    """How targets are stored."""

    storage: str | None = option(
        None,
        type=click.Choice(tuple(MODES)),
        help="How targets are stored: "
        + "; ".join(f"{name}: {mode.description}" for name, mode in MODES.items())
        + "  [default: topk with --topk, else logits]",
    )  # None: topk with --topk, else logits
    dtype: str = option("float16", type=click.Choice(DTYPES), help="Stored logit precision.")
    topk: int | None = option(
        None, type=count(1), help="Store only the K largest logits per view (plus the log-sum-exp)."
    )
    compression: str = option("none", type=click.Choice(COMPRESSIONS), help="HDF5 compression of the stored targets.")
    block_rows: int | None = option(
        None, type=count(1), help="Rows per checksum/resume block  [default: ~1024, a multiple of --batch-size]"
    )
    targets: str = option(
        "logits",
        type=Targets(),
        help="What to store of each view: logits, embedding (what enters the teacher's classifier, or an "
        "encoder's output) or logits,embedding.",
    )
    embedding_layer: str | None = option(
        None,
        help="Store the output of this module (a name of model.named_modules(), pooled to (batch, dim)) as the "
        "embedding  [default: the input of the final nn.Linear, or an encoder's output]",
    )
    embedding_dtype: str = option(
        "float16",
        type=click.Choice(EMBEDDING_DTYPES),
        help="Stored embedding precision: float16, float32, or int8 with a float32 scale per row (compact).",
    )

    @property
    def mode(self) -> str:
        """The storage mode (softlabels.store.modes) these options ask for."""
        return self.storage or ("topk" if self.topk else "logits")

    def embedding_record(self) -> dict:
        """The BuildRecord fields of the target kinds: none for logits alone (caches as before)."""
        kinds = parse_targets(self.targets)
        if kinds == ("logits",):
            return {}
        return {"targets": kinds, "embedding_layer": self.embedding_layer, "embedding_dtype": self.embedding_dtype}


@dataclass(frozen=True)
class BuildRuntime:
    """Where and how fast the pass runs, and what to do with existing files."""

    batch_size: int = option(128, type=count(1), help="Samples per teacher batch (each brings --views images).")
    workers: int = workers_option()
    threads: int | None = threads_option()  # None: measured (softlabels.threads)
    device: str = device_option()
    resume: bool = option(False, help="Continue the partial build of --out (or start one if none exists).")
    overwrite: bool = option(False, help="Replace an existing cache or partial build at --out.")
    progress: bool = True  # the command line's --no-progress and --quiet
    stop_signals: bool = True  # SIGTERM/SIGUSR1 stop the pass at the next block (softlabels.stopping)


@dataclass(frozen=True)
class BuildConfig(Options):
    """Everything `softlabels build` needs; `BuildConfig.from_options(**flat)` fills it from flat options."""

    out: str = field(metadata=declare(type=click.Path(dir_okay=False), help="Cache file to write (HDF5)."))
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


def accuracy_text(accuracy: float | None, layout=None) -> str:
    """`teacher accuracy 91.20%`, or why there is none (`layout`: the cache's, when known)."""
    if accuracy is not None and (layout is None or layout.labelled):
        return f"teacher accuracy {accuracy:.2%}"
    if layout is not None and not layout.labelled:
        return "unlabelled (no teacher accuracy)"
    if layout is not None and not layout.has_logits:
        return "embeddings (no logits)"
    return "no teacher accuracy (unlabelled data, or embeddings alone)"


@dataclass
class BuildResult:
    path: Path
    num_samples: int
    num_views: int
    teacher_accuracy: float | None  # None: unlabelled data, or a cache of embeddings alone
    seconds: float
    images_per_second: float  # teacher inputs a second: views (images x --views) of the rows this run computed
    resumed_from: int = 0
    already_complete: bool = False  # `--resume` of a cache that was complete: nothing was computed

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
            "already_complete": self.already_complete,
        }
