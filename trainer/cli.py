"""`trainer` command line: parses options into a FitConfig (or SweepConfig), calls one library function, prints."""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import warnings

import click

from softlabels.clitools import (
    CleanErrors,
    apply_config_file,
    common_options,
    declared_options,
    echo,
    one_line_warning,
    require,
    session,
)
from trainer.options import FitOptions, SweepOptions

# The library is imported inside each command, so `--help` starts without torch.


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="softlabels")
def main():
    """Train students from a softlabels cache (or from labels, or from a teacher online)."""
    warnings.showwarning = one_line_warning


def _fit_config(options: dict):
    from trainer.config import FitConfig

    if session().quiet:
        options["progress"] = False
    return FitConfig.from_options(**options)


@main.command()
@declared_options(FitOptions)
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
    options = apply_config_file(click.get_current_context(), options, config_file, FitOptions)
    require(options, "student", "out")
    from softlabels.runtime import current_rank
    from trainer.loop import fit as run_fit

    with _interrupted(options["out"], "last.pt", f"{options['out']}/last.pt holds the run up to its last checkpoint"):
        summary = run_fit(_fit_config(options))
    if current_rank().is_main:
        echo(describe_summary(summary, options["out"]))


class Interrupted(RuntimeError):
    """Ctrl-C stopped a run or sweep: its one line says what is kept and how to go on (exit status 130)."""

    exit_code = 130


@contextlib.contextmanager
def _interrupted(out: str, checkpoints: str, kept: str):
    """Ctrl-C as one line: `kept` when a checkpoint matching the glob `checkpoints` exists in `out`."""
    try:
        yield
    except KeyboardInterrupt:
        if not glob.glob(os.path.join(glob.escape(out), checkpoints)):
            raise Interrupted("interrupted before the first checkpoint: run the same command again") from None
        raise Interrupted(f"interrupted: {kept}; run the same command with --resume to continue") from None


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
    if summary.get("eval_set"):
        held_out = f" on {summary['eval_set']}"
    elif summary["config"]["runtime"].get("eval_dataset") == "none":
        held_out = " (--eval-dataset none)"
    else:  # no test/ or val/ beside the training data, and no --eval-dataset
        held_out = " (no held-out set found beside the training data: pass --eval-dataset SPEC)"
    uses = summary.get("view_uses")
    seen = f", each stored view seen {uses:.3g} times" if uses is not None else ""
    probes = "".join(f", {name} {percent(value)}" for name, value in summary.items() if name.startswith("probe_"))
    return (
        f"{summary['student']} [{summary['loss']}]: test accuracy {percent(summary['test_accuracy'])}"
        f"{held_out}{best}{probes}, "
        f"{summary['epochs']} epochs in {summary['wall_seconds']:.1f} s{seen}, "
        f"{summary['images_per_second'] or 0:.0f} images/s{state}; wrote {out}"
    )


@main.command()
@declared_options(SweepOptions, FitOptions, exclude=("student", "temperature", "alpha"))
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Options from a JSON (or YAML) file: fit's names (a run's summary.json too), the grid as lists "
    "under students, temperatures and alphas; flags given here win.",
)
@common_options(progress=False)
def sweep(config_file, **options):
    """Train every student x temperature x alpha combination from one cache and rank them.

    Runs that share a data schedule train together: each batch is decoded once and handed to every
    student, and each run's weights equal the same run trained alone. A failed run is recorded and
    the sweep goes on; a sweep whose students would not fit in memory together is refused.
    """
    single = {"student": "students", "temperature": "temperatures", "alpha": "alphas"}  # a fit's file works too
    options = apply_config_file(click.get_current_context(), options, config_file, FitOptions, single)
    if not options["students"]:
        raise click.UsageError("Missing option '--student' (on the command line or as students in --config)")
    require(options, "out")
    from trainer.sweep import RANKED_BY, SweepConfig, ranking
    from trainer.sweep import sweep as run_sweep

    grid = ("students", "temperatures", "alphas", "with_ce", "sequential")
    students, temperatures, alphas, with_ce, sequential = (options.pop(name) for name in grid)
    base = _fit_config({**options, "student": students[0]})
    config = SweepConfig(base, tuple(students), tuple(temperatures), tuple(alphas), with_ce, sequential)

    def report(row, done, total):
        key = ranking([row])  # what ranks it: test accuracy, or the probe's with --probe
        result = f"{RANKED_BY[key]} {row[key]:.2%}" if row.get(key) is not None else row["status"]
        echo(f"[{done}/{total}] {row['run']}: {result}" + (f" ({row['error']})" if row.get("error") else ""))

    kept = f"each run's last.pt under {options['out']} holds it up to its last checkpoint"
    with _interrupted(options["out"], "*/last.pt", kept):
        rows = run_sweep(config, on_result=report)
    failed = sum(row["status"] == "failed" for row in rows)
    echo(f"wrote {options['out']}/leaderboard.md ({len(rows)} runs, {failed} failed); best: {rows[0]['run']}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
