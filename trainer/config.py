"""`FitConfig`: every option of `trainer fit`, in the groups `trainer.options` declares (a resume must
agree on every group but `runtime`), what they mean together (the loss, the learning rate and weight
decay as used), and `check_config`, which refuses what cannot work before any data is read."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from softlabels import store
from softlabels.data.specs import eval_spec_for
from softlabels.ensemble import check_form, check_one_teacher
from softlabels.ensemble.member import Member
from softlabels.models.registry import archive_path
from softlabels.views import parse_augment, recorded_augment
from trainer.logs import check_loggers
from trainer.losses import Objective, default_loss, get_loss, teacher_losses
from trainer.options import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, OPTIMIZERS, SCHEDULES, FitOptions

if TYPE_CHECKING:
    from softlabels.data import DatasetSource

ONECYCLE_RISE = 0.25  # fraction of the steps spent rising to the peak when no --warmup-epochs is given
ONECYCLE_START = 1 / 25  # the rise starts at peak/25, as torch's OneCycleLR
METRIC_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_accuracy",
    "eval_loss",
    "eval_accuracy",
    "probe_knn",
    "probe_linear",
    "probe_teacher_knn",
    "probe_teacher_linear",
    "probe_nn_overlap",
    "seconds",
    "eval_seconds",
    "images_per_second",
)


class OverfitRiskWarning(UserWarning):
    """Every stored view will be seen many times without augmentation: the student may overfit them."""


class UntrainedClassifierWarning(UserWarning):
    """A loss from embeddings alone: it trains the student's features, never its classifier."""


class InconsistentAugmentWarning(UserWarning):
    """Random augmentation paired with cached targets of other views."""


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite: the run stops before that step changes the weights. `samples`:
    the keys of the batch's samples whose inputs or targets were already NaN/inf (the data's fault)."""

    def __init__(self, message: str, samples=()):
        super().__init__(message)
        self.samples = list(samples)


@dataclass(frozen=True)
class FitConfig(FitOptions):
    """Everything one training run needs, in groups; `FitConfig.from_options(**flat)` fills it from the
    flat option names of `trainer fit` (e.g. `FitConfig.from_options(cache="c.h5", student="small_cnn",
    out="runs/kd")`). A resume must agree on every group but `runtime`."""

    @property
    def loss_name(self) -> str:
        return self.objective.loss or default_loss(has_teacher=bool(self.runtime.cache or self.objective.teacher))

    @property
    def peak_lr(self) -> float:
        return self.optim.lr if self.optim.lr is not None else DEFAULT_LR[self.optim.optimizer]

    def make_objective(self) -> Objective:
        o = self.objective
        return Objective(self.loss_name, o.temperature, o.alpha, o.label_smoothing)

    @property
    def decay(self) -> float:
        o = self.optim
        return o.weight_decay if o.weight_decay is not None else DEFAULT_WEIGHT_DECAY[o.optimizer]

    def to_dict(self) -> dict:
        """The settings as used (defaults resolved), nested, in plain JSON types: checkpoints and summary.json."""
        settings = super().to_dict()
        settings["objective"]["loss"] = self.loss_name
        settings["optim"].update(lr=self.peak_lr, weight_decay=self.decay)
        return settings


def check_config(config: FitConfig) -> None:
    """Every option combination that cannot work, refused before any data is read."""
    if not (config.runtime.cache or config.data.dataset):
        raise ValueError("give --cache FILE (learn from a teacher's cache) or --dataset SPEC (learn from labels)")
    check_loggers(config.runtime.log)
    if config.model.image_size is not None and (config.runtime.cache or config.objective.teacher):
        raise ValueError(
            "--image-size sets the views of training from labels; a cache or an online teacher "
            "makes its views at its own input size"
        )
    if config.runtime.cache and config.objective.teacher:
        raise ValueError("--cache and --teacher exclude each other: the cache already holds the teacher's outputs")
    if len(config.runtime.cache) > 1 and config.data.dataset:
        raise ValueError(
            f"--dataset names one dataset, but {len(config.runtime.cache)} caches are given: with several caches "
            f"each reads the dataset it recorded"
        )
    if len(set(config.runtime.cache)) < len(config.runtime.cache):
        raise ValueError("a --cache is given twice: each of a run's caches must be another file")
    if config.objective.teacher and not config.runtime.weights and archive_path(config.objective.teacher) is None:
        raise ValueError(
            f"--teacher {config.objective.teacher} needs --weights PATH: an untrained teacher teaches nothing"
        )
    if config.objective.loss is not None:
        get_loss(config.objective.loss)  # an unknown name (or sum of names) is refused naming the known ones
    objective = config.make_objective()
    if objective.needs_embedding and not config.runtime.cache:
        raise ValueError(
            f"--loss {objective.name} learns from a teacher's stored embeddings: pass --cache FILE built with "
            f"--targets embedding"
        )
    objective.loss.check_batch_size(config.optim.batch_size)
    if objective.needs_teacher and not (config.runtime.cache or config.objective.teacher):
        raise ValueError(
            f"--loss {objective.name} needs teacher outputs: pass --cache FILE, or --teacher SPEC "
            f"--weights PATH for online distillation (or use --loss {default_loss(has_teacher=False)})"
        )
    if config.objective.teacher and not objective.needs_teacher:
        raise ValueError(
            f"--loss {objective.name} does not use --teacher; drop it or use --loss {'/'.join(teacher_losses())}"
        )
    check_form(config.objective.ensemble)
    if config.runtime.probe and config.runtime.eval_dataset == "none":
        raise ValueError(f"{_probes(config)}; --eval-dataset none turns it off: pass --eval-dataset SPEC")
    _check_numbers(config)
    _check_finite(config)
    _check_augment(config)


def _check_numbers(config: FitConfig) -> None:
    per_decode = config.data.views_per_decode
    if per_decode < 1 or config.optim.batch_size % per_decode:
        raise ValueError(
            f"--views-per-decode must be at least 1 and divide --batch-size "
            f"({config.optim.batch_size}), got {per_decode}"
        )
    if per_decode > 1 and not config.runtime.cache:
        raise ValueError("--views-per-decode replays several stored views of each decoded sample: it needs --cache")
    if config.optim.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optim.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    if config.optim.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {config.optim.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    if config.optim.epochs < 1 or config.optim.batch_size < 1:
        raise ValueError("--epochs and --batch-size must be at least 1")
    if not config.peak_lr > 0:
        raise ValueError(f"--lr must be positive, got {config.optim.lr}")
    if not 0 <= config.optim.warmup_epochs < config.optim.epochs:
        raise ValueError(
            f"--warmup-epochs must lie in [0, --epochs={config.optim.epochs}), got {config.optim.warmup_epochs}"
        )
    if config.runtime.stop_after is not None and not 1 <= config.runtime.stop_after <= config.optim.epochs:
        raise ValueError(f"--stop-after must lie in 1..{config.optim.epochs}, got {config.runtime.stop_after}")
    if config.runtime.workers < 0 or config.runtime.cache_memory_mb < 0:
        raise ValueError("--workers and --cache-memory-mb cannot be negative")


def _check_finite(config: FitConfig) -> None:
    """Values that can only give non-finite losses (inf, NaN, a temperature whose square overflows)."""
    o, opt = config.objective, config.optim
    numbers = [
        ("--temperature", o.temperature),
        ("--alpha", o.alpha),
        ("--label-smoothing", o.label_smoothing),
        ("--lr", opt.lr),
        ("--weight-decay", opt.weight_decay),
        ("--warmup-epochs", opt.warmup_epochs),
    ]
    for flag, value in numbers:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}: the loss could only be NaN or infinite")
    config.make_objective().loss.check_finite()
    if opt.weight_decay is not None and opt.weight_decay < 0:
        raise ValueError(f"--weight-decay cannot be negative, got {opt.weight_decay}")


def warn_untrained_classifier(config: FitConfig) -> None:
    """A loss that never reads the logits leaves the classifier as initialised: say so, unless probes score the
    features (what such a run is for). Said once the run is set up, so that a refused run prints its one line."""
    objective = config.make_objective()
    if objective.loss.trains_classifier or config.runtime.probe:
        return
    name = objective.name
    warnings.warn(
        f"--loss {name} trains the student's features, never its classifier: its accuracy stays near chance; "
        f"add a term that reads the logits (--loss ce+{name} or kd+{name}) or score the features with --probe",
        UntrainedClassifierWarning,
        stacklevel=2,
    )


def _check_augment(config: FitConfig) -> None:
    augment = parse_augment(config.data.augment)
    if augment.mixes:
        raise ValueError(
            f"--augment {augment.name} makes mixed views for a cache, where the teacher labels each mixed image: "
            f"build one (softlabels build --views V --augment {augment.name}) and train from it"
        )
    if config.runtime.cache and augment.name != "none":
        if not config.data.inconsistent_augment:
            raise ValueError(
                f"--augment {augment.name} with --cache pairs random views with targets the teacher "
                f"computed on other views (inconsistent teaching). Build a multi-view cache instead "
                f"(softlabels build --views V --augment {augment.name}), whose views are replayed "
                f"exactly, or add --inconsistent-augment to do it anyway"
            )
        warnings.warn(
            f"--inconsistent-augment: the student sees random {augment.name} views but learns the "
            f"cached targets of other views",
            InconsistentAugmentWarning,
            stacklevel=3,
        )


class NoAccuracyWarning(UserWarning):
    """A run on unlabelled data without a labelled evaluation set: it measures no accuracy."""


def check_labels(config: FitConfig, source: DatasetSource) -> None:
    """An unlabelled dataset teaches through the teacher's targets alone: a label term is refused.
    Several caches: when any of them has labels, the label term learns from those."""
    if not source.labelled:
        _refuse_label_term(config, _unlabelled(config, f"{source.spec} ({source.split})"))


def check_cache_labels(config: FitConfig, caches: Sequence[store.CacheInfo]) -> None:
    """`check_labels` from the caches' layouts alone, before their samples are opened (a sweep's runs)."""
    if caches and not any(cache.layout.labelled for cache in caches):
        _refuse_label_term(config, _unlabelled(config, str(caches[0].path)))
    if config.data.subset is not None and not all(cache.layout.labelled for cache in caches):  # as subset_indices
        some = (
            "part of it is unlabelled"
            if any(c.layout.labelled for c in caches)
            else "this dataset is unlabelled: it has none"
        )
        raise ValueError(f"--subset {config.data.subset} keeps images per class, but {some}")


def check_cache_eval(config: FitConfig, caches: Sequence[store.CacheInfo]) -> None:
    """`--probe` without the held-out split a run looks for beside its (labelled) cache's image folder,
    refused from the caches' records before any data is read (a sweep's runs)."""
    if not (config.runtime.probe and caches) or config.runtime.eval_dataset is not None:
        return
    spec = config.data.dataset or next((c for c in caches if c.layout.labelled), caches[0]).dataset.spec
    if spec and spec.startswith("imagefolder:") and Path(spec[len("imagefolder:") :]).expanduser().is_dir():
        if eval_spec_for(spec) is None:
            raise ValueError(f"{_probes(config)}, and {spec} has no test or val split: pass --eval-dataset SPEC")


def _probes(config: FitConfig) -> str:
    probes = " --probe ".join(config.runtime.probe)
    return f"--probe {probes} scores the student's features on a labelled evaluation set"


def _unlabelled(config: FitConfig, one: str) -> str:
    caches = config.runtime.cache
    return f"{' and '.join(caches)} are all unlabelled" if len(caches) > 1 else f"{one} is unlabelled"


def _refuse_label_term(config: FitConfig, what: str) -> None:
    term = config.make_objective().loss.label_term
    if term is None:
        return
    fix = (
        "train on the teacher's targets alone: --loss kd --alpha 1, or --loss hard"
        if config.runtime.cache
        else "build a cache of it (softlabels build) and train on the teacher's targets: --cache FILE --alpha 1"
    )
    raise ValueError(f"{what}, so {term} has no labels to learn from; {fix}")


def check_mixed_views(config: FitConfig, caches: Sequence[store.CacheInfo]) -> None:
    """Mixed views (MixUp, CutMix) have no single label: only the teacher's targets can teach them."""
    for cache in caches:
        _check_mixed(config, cache)


def _check_mixed(config: FitConfig, cache: store.CacheInfo) -> None:
    if not (cache.layout.labelled and recorded_augment(cache.augment).mixes):
        return  # an unlabelled cache's samples learn from the teacher alone anyway
    term = config.make_objective().loss.label_term
    if term is not None:
        raise ValueError(
            f"{cache.path} holds mixed views ({cache.augment.name}): they have no single label, so "
            f"{term} would teach the wrong class; train on the teacher's targets alone: --alpha 1 (KD, as "
            f"dataset reinforcement does) or --loss hard"
        )


def check_cache_targets(config: FitConfig, caches: Sequence[store.CacheInfo]) -> None:
    """The loss's needs against what the caches store (one teacher's targets of one kind:
    `trainer.combined.check_joinable`): logits, embeddings (of one teacher)."""
    if not caches:
        return
    cache = caches[0]
    loss, layout = config.make_objective().loss, cache.layout
    if loss.needs_embedding and layout.embedding is None:
        raise ValueError(
            f"--loss {loss.name} learns from embeddings and {cache.path} stores none: build it with "
            f"--targets embedding (or logits,embedding)"
        )
    if "logits" in loss.needs and not layout.has_logits:
        raise ValueError(
            f"--loss {loss.name} needs logits and {cache.path} stores embeddings alone: use "
            f"--loss embed-cosine or embed-relational, or build with --targets logits,embedding"
        )
    if layout.num_teachers == 1:
        check_one_teacher(config.objective.ensemble, cache.path)
    if loss.needs_embedding and layout.num_teachers > 1 and not Member.claims(config.objective.ensemble or ""):
        raise ValueError(
            f"--loss {loss.name} learns from one teacher's embeddings; {cache.path} holds several: "
            f"pick one with --ensemble teacher:NAME|INDEX"
        )
