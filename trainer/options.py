"""Every option of `trainer fit` and `trainer sweep`, declared once (`softlabels.options.option`): the
groups `FitConfig` is made of, and the grid of a sweep. Imports no torch, so `trainer --help` starts
at once; facts of the modules that do (the losses, the augmentations, the model sources) are looked up
when a help text or a value needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from softlabels.build.config import AUGMENT_NAMES, DATASETS_HELP, MODEL_FORMS
from softlabels.ensemble import KINDS
from softlabels.extras import install_hint
from softlabels.options import (
    Choices,
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
    option,
    threads_option,
    trust_checkpoint_option,
    workers_option,
)
from softlabels.probes import DEFAULT_K, PROBES
from trainer.logs import LOGGERS

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}

LOSS_NAMES = deferred("trainer.losses:LOSSES", tuple)


class SumsOfChoices(Choices):
    """A registry's name, or several joined by `+` (`kd+embed-cosine`), each checked as a choice."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "+" in value:
            return "+".join(super(SumsOfChoices, self).convert(part, param, ctx) for part in value.split("+"))
        return super().convert(value, param, ctx)


DEFAULT_TEMPERATURE = deferred("trainer.losses:DEFAULT_TEMPERATURE")
DEFAULT_ALPHA = deferred("trainer.losses:DEFAULT_ALPHA")
START_METHODS = deferred("trainer.data:START_METHODS", tuple)


def per_optimizer(values: dict[str, float]) -> str:
    return ", ".join(f"{value:g} for {name}" for name, value in values.items())


@dataclass(frozen=True)
class DataOptions:
    """Which samples the student learns from, and the random augmentation it sees."""

    dataset: str | None = option(
        None, help=f"{DATASETS_HELP}  [default with --cache: the dataset recorded in the cache]"
    )  # None with a cache: the recorded dataset
    split: str = option("train", help="Training split (without --cache; a cache records its own).")
    subset: int | None = option(
        None,
        type=count(1),
        help="Train on the first N samples of each class (dataset order); evaluation still uses the whole "
        "held-out set.",
    )
    augment: str = option(
        "none",
        help=Deferred(
            lambda: (
                f"Random augmentation of the student's images ({AUGMENT_NAMES}, or FILE.py:NAME: your own "
                "Augment or torchvision v2 pipeline), drawn per sample and epoch from --seed. With --cache it needs "
                "--inconsistent-augment: a multi-view cache replays its stored views instead."
            )
        ),
    )
    inconsistent_augment: bool = option(
        False,
        help="Allow --augment with --cache: random views paired with targets computed on other views "
        "(for comparisons).",
    )
    views_per_decode: int = option(
        1,
        type=count(1),
        help="Put R stored views of each decoded image in a batch (FKD's trick: one decode for R samples seen; "
        "a batch holds --batch-size / R images; every view once per V / R epochs). Needs --cache.",
    )


@dataclass(frozen=True)
class ModelOptions:
    """The student and its input statistics."""

    student: str = field(metadata=declare(help=Deferred(lambda: f"Student: {MODEL_FORMS}.")))
    mean: tuple[float, ...] | None = option(
        None,
        type=floats,
        help="Student normalisation mean R,G,B or one value for grey  [default: the student's zoo entry's, "
        "else the dataset's]",
    )
    std: tuple[float, ...] | None = option(None, type=floats, help="Student normalisation std  [default: as --mean]")
    image_size: int | None = option(
        None,
        type=count(1),
        help="Learning from labels: the size the student's views are made at  [default: the student's declared "
        "input, else the dataset's]",
    )  # a cache fixes its own


@dataclass(frozen=True)
class ObjectiveOptions:
    """What the student is trained to match; `teacher` is a spec for online KD."""

    loss: str | None = option(
        None,
        type=SumsOfChoices(LOSS_NAMES),
        help="kd: Hinton's KD; hard: CE on the teacher's arg-max; ce: labels only; embed-*: from a cache's "
        "embeddings (`softlabels build --targets embedding`); a sum such as kd+embed-cosine trains on both  "
        "[default: kd with --cache/--teacher, else ce]",
    )  # None: kd with a cache or teacher, else ce
    temperature: float = option(DEFAULT_TEMPERATURE, help="KD temperature T (> 0).")
    alpha: float = option(DEFAULT_ALPHA, help="KD weight of the teacher term, in [0, 1].")
    label_smoothing: float = option(0.0, help="Label smoothing of the cross-entropy terms.")
    teacher: str | None = option(
        None, help="Online KD instead of --cache: teacher spec run inside the loop on each batch."
    )
    ensemble: str | None = option(
        None,
        help=f"A cache of several teachers: how to mix them ({', '.join(KINDS)}): mean-prob averages their "
        "softmax at T [default], mean-logit their logits, weights such as 0.7,0.3 their probabilities, "
        "teacher:NAME|INDEX keeps one member (for embedding losses, the one whose embeddings are learnt).",
    )


@dataclass(frozen=True)
class OptimOptions:
    """How the student is trained."""

    epochs: int = option(10, type=count(1), help="Epochs.")
    batch_size: int = option(64, type=count(1), help="Batch size (per process under torchrun).")
    lr: float | None = option(
        None, help=f"Peak learning rate  [default: {per_optimizer(DEFAULT_LR)}]"
    )  # None: DEFAULT_LR[optimizer]
    optimizer: str = option("sgd", type=click.Choice(OPTIMIZERS), help="sgd: momentum 0.9, Nesterov.")
    weight_decay: float | None = option(
        None, help=f"Weight decay  [default: {per_optimizer(DEFAULT_WEIGHT_DECAY)}]"
    )  # None: DEFAULT_WEIGHT_DECAY[optimizer]
    schedule: str = option(
        "onecycle",
        type=click.Choice(SCHEDULES),
        help="Learning-rate schedule, stepped every batch. onecycle: rise from lr/25 over --warmup-epochs (25% "
        "of the run when 0), then cosine to 0; cosine: warmup then cosine to 0; step: warmup then x0.1 at 50% "
        "and 75%.",
    )
    warmup_epochs: float = option(0.0, help="Linear warmup length in epochs (fractions allowed).")
    # Max global gradient norm (0: off). Measured: small_cnn with KD at T=2 diverged to chance at
    # lr 0.05 without it and reached 59% with it (BENCHMARKS.md, bench/accuracy.py).
    clip_grad_norm: float = option(
        2.0,
        type=click.FloatRange(min=0),
        help="Clip the global gradient norm to this value; 0 turns clipping off (KD at T >= 2 diverged without "
        "it in bench/accuracy.py).",
    )
    seed: int = option(0, help="Seed of the weights, the shuffling, the view schedule and random augmentation.")
    amp: bool = amp_option()


@dataclass(frozen=True)
class RuntimeOptions:
    """Where files are and how fast the run goes: may change when resuming. A cache's or a teacher's
    path may change too; their content is checked separately (`TrainingData.identity`)."""

    out: str = field(
        metadata=declare(
            type=click.Path(file_okay=False),
            help="Run folder: summary.json, metrics.jsonl/.csv, last.pt, best.pt, best.safetensors/.json, "
            "curves.png (a sweep's: one such folder per run, and leaderboard.md/.csv/.png).",
        )
    )
    cache: tuple[str, ...] = option(
        (),
        type=click.Path(dir_okay=False),
        multiple=True,
        help="Teacher cache (softlabels build) to learn from; the teacher itself is never loaded. Repeat it to "
        "train on several caches of one teacher as one set (e.g. a labelled and an unlabelled one: the labels "
        "count where a sample has one).",
    )  # a str (the API's one cache) is taken as a tuple of one
    weights: str | None = option(
        None,
        help="With --teacher: its weights (online KD). Otherwise the student's starting weights, to fine-tune "
        "(a new classifier where their class count differs): a file, or DEFAULT, IMAGENET1K_V2, ... "
        "(torchvision), pretrained (timm).",
    )  # the online teacher's checkpoint
    trust_checkpoint: bool = trust_checkpoint_option()
    eval_dataset: str | None = option(
        None,
        help="Held-out set evaluated each epoch, or `none`  [default: the test split of the training dataset "
        "where one exists: built-ins, imagefolder PATH/test]",
    )  # None: the matching test split; "none": no evaluation
    probe: tuple[str, ...] = option(
        (),
        type=click.Choice(PROBES),
        multiple=True,
        help="After the last epoch, also score the student's penultimate features on the evaluation set "
        f"without its classifier: knn (cosine, k={DEFAULT_K}) and/or linear (ridge); fit on the set's even rows, "
        "scored on its odd rows; reported as probe_knn / probe_linear in metrics and summary.",
    )
    probe_teacher: str | None = option(
        None,
        type=click.Path(dir_okay=False),
        help="With --probe: the teacher's cache of the evaluation set, storing embeddings (softlabels build "
        "--split test --targets embedding): its embeddings are scored by the same probes (probe_teacher_knn / "
        f"probe_teacher_linear), and probe_nn_overlap is the mean share of each sample's {DEFAULT_K} "
        "cosine-nearest neighbours in the set on which student and teacher agree.",
    )
    workers: int = workers_option()
    start_method: str | None = option(
        None,
        type=Choices(START_METHODS),
        help="Worker start method  [default: the platform's]",
    )
    threads: int | None = threads_option()  # None: measured (softlabels.threads)
    device: str = device_option()
    data_root: str = data_root_option()
    download: bool = download_option()
    cache_memory_mb: int = option(
        2048,
        type=count(0),
        help="Read caches up to this size into memory; larger ones are read lazily per worker.",
    )
    resume: bool = option(False, help="Continue the run in --out from its last.pt (or start it if none).")
    overwrite: bool = option(False, help="Start again in an --out that already holds a run.")
    stop_after: int | None = option(
        None,
        type=count(1),
        help="Stop after this epoch (of --epochs), leaving a last.pt to --resume from: for time-limited jobs.",
    )
    progress: bool = option(
        True, help="Progress bars (one line every 30 s when stderr is no terminal) and per-epoch lines."
    )
    log: tuple[str, ...] = option(
        (),
        type=click.Choice(LOGGERS),
        multiple=True,
        help="Also log to: tensorboard (OUT/tensorboard: loss and lr per step, every metric per epoch; "
        + install_hint("tensorboard")
        + ").",
    )  # extra loggers: "tensorboard"
    verify: bool = option(
        True,
        help="Check the cache's block checksums: all when it is read into memory, each block on its first read "
        "otherwise (costs: BENCHMARKS.md).",
    )
    check_content: bool = option(
        False,
        negatable=True,
        help="Compare every image read with the SHA-256 the build recorded, refusing one whose content changed "
        "(costs 8-24% of reading a sample, BENCHMARKS.md; `softlabels verify --dataset` checks every image once "
        "instead).",
    )
    stop_signals: bool = True  # SIGTERM/SIGUSR1 save a checkpoint at the current step and stop (API only)

    def __post_init__(self):
        if isinstance(self.cache, str) or self.cache is None:  # one cache by name, as before caches could repeat
            object.__setattr__(self, "cache", (self.cache,) if self.cache else ())
        else:
            object.__setattr__(self, "cache", tuple(self.cache))


@dataclass(frozen=True)
class FitOptions(Options):
    """The groups of one training run; `trainer.config.FitConfig` adds what they mean together."""

    data: DataOptions
    model: ModelOptions
    objective: ObjectiveOptions
    optim: OptimOptions
    runtime: RuntimeOptions


@dataclass(frozen=True)
class SweepOptions:
    """The grid of `trainer sweep` (students x temperatures x alphas, plus optional CE baselines) around
    one base FitConfig; `trainer.sweep.SweepConfig` lists its runs."""

    base: FitOptions  # a FitConfig: its student, temperature, alpha and out are replaced per run
    students: tuple[str, ...] = field(
        metadata=declare(flags=("--student",), type=str, multiple=True, help="Student spec; repeat for several.")
    )
    temperatures: tuple[float, ...] = option(
        (),
        flags=("--temperature",),
        type=float,
        multiple=True,
        help=Deferred(lambda: f"KD temperature; repeat for a grid  [default: {DEFAULT_TEMPERATURE():g}]"),
    )
    alphas: tuple[float, ...] = option(
        (),
        flags=("--alpha",),
        type=float,
        multiple=True,
        help=Deferred(lambda: f"KD alpha; repeat for a grid  [default: {DEFAULT_ALPHA():g}]"),
    )
    with_ce: bool = option(False, help="Also train each student on labels alone (the baseline row).")
    sequential: bool = option(
        False,
        help="Train the runs one after another, each reading its own batches, instead of every run that "
        "shares a data schedule from one stream of batches.",
    )
