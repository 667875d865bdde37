"""`trainer` command line: parses options into a FitConfig (or SweepConfig), calls one library function, prints."""

from __future__ import annotations

import sys
import warnings

import click

from softlabels.clitools import (
    CleanErrors,
    apply_config_file,
    common_options,
    echo,
    floats,
    int_range,
    one_line_warning,
    require,
    session,
)
from softlabels.extras import install_hint
from softlabels.runtime import current_rank, default_workers
from softlabels.transforms import AUGMENTS
from trainer.config import OPTIMIZERS, SCHEDULES, FitConfig
from trainer.data import START_METHODS
from trainer.logs import LOGGERS
from trainer.loop import fit as run_fit
from trainer.losses import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, LOSSES
from trainer.sweep import SweepConfig
from trainer.sweep import sweep as run_sweep


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="softlabels")
def main():
    """Train students from a softlabels cache (or from labels, or from a teacher online)."""
    warnings.showwarning = one_line_warning


_OPTIONS = [
    click.option(
        "--cache",
        type=click.Path(dir_okay=False),
        help="Teacher cache (softlabels build) to learn from; the teacher itself is never loaded.",
    ),
    click.option(
        "--dataset",
        help="cifar10, cifar100, mnist, fashion-mnist, imagefolder:PATH or FILE.py:FUNC "
        "[default with --cache: the dataset recorded in the cache].",
    ),
    click.option("--split", default="train", help="Training split (without --cache; a cache records its own)."),
    click.option("--teacher", help="Online KD instead of --cache: teacher spec run inside the loop on each batch."),
    click.option(
        "--weights",
        help="With --teacher: its weights (online KD). Otherwise the student's starting weights, to fine-tune "
        "(a new classifier where their class count differs): a file, or DEFAULT, IMAGENET1K_V2, ... "
        "(torchvision), pretrained (timm).",
    ),
    click.option(
        "--trust-checkpoint", is_flag=True, help="Allow full unpickling of --weights (runs code from the file)."
    ),
    click.option(
        "--loss",
        type=click.Choice(LOSSES),
        help="kd: Hinton's KD; hard: CE on the teacher's arg-max; "
        "ce: labels only  [default: kd with --cache/--teacher, else ce]",
    ),
    click.option(
        "--ensemble",
        help="A cache of several teachers: mean-prob (their softmax at T averaged) "
        "[default], mean-logit, weights such as 0.7,0.3, or teacher:NAME|INDEX for one member.",
    ),
    click.option("--label-smoothing", default=0.0, type=float, help="Label smoothing of the cross-entropy terms."),
    click.option(
        "--eval-dataset",
        help="Held-out set evaluated each epoch, or `none`  [default: the test split of "
        "the training dataset where one exists: built-ins, imagefolder PATH/test]",
    ),
    click.option(
        "--subset",
        type=int_range(1),
        help="Train on the first N samples of each class (dataset order); "
        "evaluation still uses the whole held-out set.",
    ),
    click.option("--epochs", default=10, type=int_range(1), help="Epochs."),
    click.option("--batch-size", default=64, type=int_range(1), help="Batch size (per process under torchrun)."),
    click.option("--lr", type=float, help="Peak learning rate  [default: 0.05 for sgd, 0.001 for adamw]"),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", help="sgd: momentum 0.9, Nesterov."),
    click.option("--weight-decay", type=float, help="Weight decay  [default: 5e-4 for sgd, 0.05 for adamw]"),
    click.option(
        "--schedule",
        type=click.Choice(SCHEDULES),
        default="onecycle",
        help="Learning-rate schedule, "
        "stepped every batch. onecycle: rise from lr/25 over --warmup-epochs (25% of the run when 0), then "
        "cosine to 0; cosine: warmup then cosine to 0; step: warmup then x0.1 at 50% and 75%.",
    ),
    click.option(
        "--clip-grad-norm",
        default=2.0,
        type=click.FloatRange(min=0),
        help="Clip the global gradient "
        "norm to this value; 0 turns clipping off (KD at T >= 2 diverged without it in bench/accuracy.py).",
    ),
    click.option(
        "--warmup-epochs", default=0.0, type=float, help="Linear warmup length in epochs (fractions allowed)."
    ),
    click.option(
        "--augment",
        default="none",
        help=f"Random augmentation of the student's images ({', '.join(AUGMENTS)}, or FILE.py:NAME: your own "
        "Augment or torchvision v2 pipeline), drawn per sample and epoch from --seed. With --cache it needs "
        "--inconsistent-augment: a multi-view cache replays its stored views instead.",
    ),
    click.option(
        "--views-per-decode",
        default=1,
        type=int_range(1),
        help="Put R stored views of each decoded "
        "image in a batch (FKD's trick: one decode for R samples seen; a batch holds --batch-size / R "
        "images; every view once per V / R epochs). Needs --cache.",
    ),
    click.option(
        "--inconsistent-augment",
        is_flag=True,
        help="Allow --augment with --cache: random views paired "
        "with targets computed on other views (for comparisons).",
    ),
    click.option(
        "--mean",
        type=floats,
        help="Student normalisation mean R,G,B or one value for grey  [default: the "
        "student's zoo entry's, else the dataset's]",
    ),
    click.option("--std", type=floats, help="Student normalisation std  [default: as --mean]"),
    click.option(
        "--image-size",
        type=int_range(1),
        help="Learning from labels: the size the student's views are "
        "made at  [default: the student's declared input, else the dataset's]",
    ),
    click.option(
        "--workers",
        type=int_range(0),
        help=f"DataLoader workers  [default: cores - 1, at most 8: {default_workers()} here]",
    ),
    click.option(
        "--start-method", type=click.Choice(START_METHODS), help="Worker start method  [default: the platform's]"
    ),
    click.option("--threads", type=int_range(1), help="CPU intra-op threads  [default: cores - workers]"),
    click.option("--device", default="auto", help="auto, cpu, cuda or cuda:INDEX."),
    click.option("--amp/--no-amp", default=True, help="fp16 autocast on CUDA (ignored on CPU)."),
    click.option(
        "--seed",
        default=0,
        type=int,
        help="Seed of the weights, the shuffling, the view schedule and random augmentation.",
    ),
    click.option(
        "--data-root", default="data", type=click.Path(file_okay=False), help="Root of the built-in datasets."
    ),
    click.option("--download", is_flag=True, help="Let torchvision download a built-in dataset (needs a network)."),
    click.option(
        "--cache-memory-mb",
        default=2048,
        type=int_range(0),
        help="Read caches up to this size into memory; larger ones are read lazily per worker.",
    ),
    click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt (or start it if none)."),
    click.option("--overwrite", is_flag=True, help="Start again in an --out that already holds a run."),
    click.option(
        "--stop-after",
        type=int_range(1),
        help="Stop after this epoch (of --epochs), leaving a last.pt to --resume from: for time-limited jobs.",
    ),
    click.option(
        "--progress/--no-progress",
        default=True,
        help="Progress bars (one line every 30 s when stderr is no terminal) and per-epoch lines.",
    ),
    click.option(
        "--verify/--no-verify",
        default=True,
        help="Check the cache's block checksums: all when it is read into memory, each block on its first "
        "read otherwise (costs: BENCHMARKS.md).",
    ),
    click.option(
        "--check-content/--no-check-content",
        default=False,
        help="Compare every image read with the SHA-256 the build recorded, refusing one whose content "
        "changed (costs 8-24% of reading a sample, BENCHMARKS.md; `softlabels verify --dataset` checks "
        "every image once instead).",
    ),
    click.option(
        "--log",
        type=click.Choice(LOGGERS),
        multiple=True,
        help="Also log to: tensorboard (OUT/tensorboard: "
        "loss and lr per step, every metric per epoch; " + install_hint("tensorboard") + ").",
    ),
]


def training_options(command):
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def _fit_config(options: dict):
    if options.get("workers") is None:
        options.pop("workers", None)
    if session().quiet:
        options["progress"] = False
    return FitConfig.from_options(**options)


@main.command()
@click.option(
    "--student",
    help="Zoo name (small_cnn, mlp, linear, cifar_resnet8/14/20/32/...), timm:NAME, torchvision:NAME or FILE.py:FUNC.",
)
@click.option("--temperature", default=DEFAULT_TEMPERATURE, type=float, help="KD temperature T (> 0).")
@click.option("--alpha", default=DEFAULT_ALPHA, type=float, help="KD weight of the teacher term, in [0, 1].")
@training_options
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run folder: summary.json, metrics.jsonl/.csv, last.pt, best.pt, best.safetensors/.json, curves.png.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Options from a JSON (or YAML) file, or a finished run's summary.json to run it again; flags given here win.",
)
@common_options(progress=False)
def fit(config_file, **options):
    """Train one student: from a cache (kd), from labels (ce), or from a teacher online.

    \b
    trainer fit --cache data/cifar10-resnet56.h5 --student small_cnn --out runs/kd
    trainer fit --dataset cifar10 --student small_cnn --loss ce --out runs/ce
    torchrun --standalone --nproc-per-node 2 -m trainer fit ...   (DDP; --batch-size per process)

    SIGTERM or SIGUSR1 (SLURM: #SBATCH --signal=USR1@180, or TERM@180 under torchrun) saves last.pt at
    the current step and exits with status 75; --resume then continues exactly where it stopped.
    """
    # stop_signals is an API setting (a run's summary.json records it), not an option of the command
    options = apply_config_file(click.get_current_context(), options, config_file, ignore=("stop_signals",))
    require(options, "student", "out")
    summary = run_fit(_fit_config(options))
    if current_rank().is_main:
        echo(describe_summary(summary, options["out"]))


def describe_summary(summary: dict, out: str) -> str:
    def percent(value):
        return "n/a" if value is None else f"{value:.2%}"

    best = (
        f" (best {percent(summary['best_accuracy'])} at epoch {summary['best_epoch']})"
        if summary.get("best_epoch")
        else ""
    )
    state = (
        ""
        if summary["finished"]
        else f" (stopped at epoch {summary['epochs']} of {summary['config']['optim']['epochs']})"
    )
    uses = summary.get("view_uses")
    seen = f", each stored view seen {uses:.3g} times" if uses is not None else ""
    return (
        f"{summary['student']} [{summary['loss']}]: test accuracy {percent(summary['test_accuracy'])}{best}, "
        f"{summary['epochs']} epochs in {summary['wall_seconds']:.1f} s{seen}, "
        f"{summary['images_per_second'] or 0:.0f} images/s{state}; wrote {out}"
    )


@main.command()
@click.option("--student", "students", required=True, multiple=True, help="Student spec; repeat for several.")
@click.option(
    "--temperature",
    "temperatures",
    multiple=True,
    type=float,
    help=f"KD temperature; repeat for a grid  [default: {DEFAULT_TEMPERATURE:g}]",
)
@click.option(
    "--alpha", "alphas", multiple=True, type=float, help=f"KD alpha; repeat for a grid  [default: {DEFAULT_ALPHA:g}]"
)
@click.option("--with-ce", is_flag=True, help="Also train each student on labels alone (the baseline row).")
@click.option(
    "--sequential",
    is_flag=True,
    help="Train the runs one after another, each reading its own batches, instead of every run that shares "
    "a data schedule from one stream of batches.",
)
@training_options
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Sweep folder: one sub-folder per run, leaderboard.md/.csv/.png.",
)
@common_options(progress=False)
def sweep(students, temperatures, alphas, with_ce, sequential, **options):
    """Train every student x temperature x alpha combination from one cache and rank them.

    Runs that share a data schedule train together: each batch is decoded once and handed to every
    student, and each run's weights equal the same run trained alone. A failed run is recorded and
    the sweep goes on; a sweep whose students would not fit in memory together is refused.
    """
    base = _fit_config({**options, "student": students[0]})
    config = SweepConfig(base, tuple(students), tuple(temperatures), tuple(alphas), with_ce, sequential)

    def report(row, done, total):
        result = f"{row['test_accuracy']:.2%}" if row.get("test_accuracy") is not None else row["status"]
        echo(f"[{done}/{total}] {row['run']}: {result}" + (f" ({row['error']})" if row.get("error") else ""))

    rows = run_sweep(config, on_result=report)
    failed = sum(row["status"] == "failed" for row in rows)
    echo(f"wrote {options['out']}/leaderboard.md ({len(rows)} runs, {failed} failed); best: {rows[0]['run']}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
