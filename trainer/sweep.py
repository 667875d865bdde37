"""`trainer sweep`: every student x temperature x alpha from one cache, one run folder each, and a leaderboard.

Runs that share a data schedule train together from one stream of batches (`trainer.stream`: each
batch decoded once, every run bit-identical to the same run alone); `sequential` trains them one
after another instead. A run that fails is recorded with its error and the sweep goes on. The
leaderboard (leaderboard.md, .csv, .png) is rewritten after every run, so an interrupted sweep still
shows what it has (leaderboard.png once per stream, whose runs end together), and `--resume` picks the
runs up where they stopped.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from softlabels.runtime import current_rank
from softlabels.stopping import Stopped
from softlabels.store import read_info
from trainer import curves
from trainer.checkpoints import write_text_atomic
from trainer.classic import check_classic, is_classic
from trainer.combined import check_joinable
from trainer.config import (
    FitConfig,
    check_cache_eval,
    check_cache_labels,
    check_cache_targets,
    check_config,
    check_mixed_views,
)
from trainer.loop import LEADERBOARD, fit, hold_out
from trainer.losses import check_kd_settings, default_loss
from trainer.memory import check_fits
from trainer.options import SweepOptions
from trainer.stream import group_streams, train_stream

# What ranks the runs: the first of these any run reports. With --probe the features are what the sweep
# compares (an embedding loss alone leaves the classifier at chance), so the probe ranks them.
RANKED_BY = {
    "probe_linear": "linear-probe accuracy",
    "probe_knn": "k-NN probe accuracy",
    "test_accuracy": "test accuracy",
}
ACCURACIES = ("test_accuracy", "best_accuracy", "probe_linear", "probe_knn")
COLUMNS = (
    "rank",
    "run",
    "student",
    "loss",
    "temperature",
    "alpha",
    "test_accuracy",
    "best_accuracy",
    "probe_linear",
    "probe_knn",
    "epochs",
    "wall_seconds",
    "images_per_second",
    "status",
    "error",
)


@dataclass(frozen=True)
class SweepConfig(SweepOptions):
    """The grid (students x temperatures x alphas, plus optional CE baselines) around one base FitConfig,
    as `trainer.options.SweepOptions` declares it, and the runs it makes."""

    base: FitConfig  # its student, temperature, alpha and out are replaced per run

    def runs(self) -> list[FitConfig]:
        if not self.students:
            raise ValueError("give at least one --student")
        for t, a in itertools.product(self.temperatures or (1.0,), self.alphas or (0.0,)):
            check_kd_settings(t, a)
        used = self.base.make_objective().loss.settings
        unused = [flag for flag, grid in (("temperature", self.temperatures), ("alpha", self.alphas)) if grid]
        unused = [flag for flag in unused if flag not in used]
        if unused:
            warnings.warn(
                f"--loss {self.base.loss_name} uses no {' or '.join(unused)}: the grid's "
                f"{' and '.join('--' + flag for flag in unused)} values are ignored",
                stacklevel=2,
            )
        out = Path(self.base.runtime.out)
        loss, baseline = self.base.loss_name, default_loss(has_teacher=False)
        grid = []
        labels = _student_labels(list(dict.fromkeys(self.students)))
        for student, label in labels.items():
            if self.with_ce and loss != baseline:
                grid.append(self.base.replace(student=student, loss=baseline, out=str(out / _name(label, baseline))))
            if not self.base.make_objective().loss.settings:  # temperature and alpha shape only some losses
                grid.append(self.base.replace(student=student, out=str(out / _name(label, loss))))
                continue
            for t, a in itertools.product(*self._settings()):
                grid.append(
                    self.base.replace(student=student, temperature=t, alpha=a, out=str(out / _name(label, loss, t, a)))
                )
        return grid

    def _settings(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The temperatures and alphas to try: the grid's where the loss uses them, else the base run's."""
        objective, used = self.base.objective, self.base.make_objective().loss.settings
        temperatures = self.temperatures if "temperature" in used and self.temperatures else (objective.temperature,)
        return temperatures, self.alphas if "alpha" in used and self.alphas else (objective.alpha,)


RUN_FILES = ("last.pt", "summary.json", "model.joblib")  # what a torch or scikit-learn run leaves in its folder


def _student_labels(students: list[str]) -> dict[str, str]:
    """Each student's name in its run folders: a `FILE.py:FUNC` student is `FILE.FUNC` (not its whole
    path) unless two students would then share a name."""
    short = {}
    for student in students:
        file, colon, func = student.rpartition(":")
        short[student] = f"{Path(file).stem}.{func}" if colon and file.endswith(".py") else student
    clashes = {label for label in short.values() if list(short.values()).count(label) > 1}
    return {student: student if label in clashes else label for student, label in short.items()}


def _name(student: str, loss: str, temperature: float | None = None, alpha: float | None = None) -> str:
    name = f"{student}-{loss}" + (f"-T{temperature:g}-a{alpha:g}" if temperature is not None else "")
    return re.sub(r"[^\w.+-]", "_", name)


def run_one(config: FitConfig) -> dict:
    """One run of the sweep as a leaderboard row; failures become rows too (status and error)."""
    return result_row(config, _fit_alone(config))


def _fit_alone(config: FitConfig) -> dict | BaseException:
    """A run's summary, or the error it failed with."""
    try:
        return fit(config.replace(resume=_resumable(config)))
    except (KeyboardInterrupt, Stopped):  # the whole sweep stops; --resume continues it
        raise
    except Exception as err:  # recorded, and the sweep goes on
        return err


def result_row(config: FitConfig, result: dict | BaseException) -> dict:
    """A run's leaderboard row from its summary, or from the error it failed with (also OUT/error.txt)."""
    used = config.make_objective().loss.settings
    row = {
        "run": Path(config.runtime.out).name,
        "student": config.model.student,
        "loss": config.loss_name,
        "temperature": config.objective.temperature if "temperature" in used else None,
        "alpha": config.objective.alpha if "alpha" in used else None,
    }
    if isinstance(result, BaseException):
        message = " ".join(str(result).split()) or type(result).__name__
        Path(config.runtime.out).mkdir(parents=True, exist_ok=True)
        write_text_atomic("".join(traceback.format_exception(result)), Path(config.runtime.out) / "error.txt")
        return {**row, "status": "failed", "error": f"{type(result).__name__}: {message}"}
    keep = (*ACCURACIES, "epochs", "wall_seconds", "images_per_second")
    return {**row, **{k: result.get(k) for k in keep}, "status": "ok", "error": ""}


def sweep(config: SweepConfig, on_result=None) -> list[dict]:
    """Train every run of the grid (together where they share batches, or in turn when `sequential`);
    returns the ranked rows (also written under base.out, and rewritten as each run ends)."""
    runs = config.runs()
    caches = [read_info(cache) for cache in config.base.runtime.cache]  # a missing or damaged one stops it now
    if len(caches) > 1:
        check_joinable(caches)  # caches of other teachers, targets or classes: every run would fail on them
    if config.with_ce and caches and not any(cache.layout.labelled for cache in caches):
        unlabelled = " and ".join(str(cache.path) for cache in caches)
        raise ValueError(f"--with-ce trains on labels alone and {unlabelled} holds no labels: leave out --with-ce")
    for run in runs:  # what any run would fail on (no data, its loss against the caches) stops the sweep now
        (check_classic if is_classic(run.model.student) else check_config)(run)
        check_cache_targets(run, caches)
        check_cache_labels(run, caches)
        check_cache_eval(run, caches)
        check_mixed_views(run, caches)
    streams = [[run] for run in runs] if config.sequential else group_streams(runs)
    check_fits(streams, config.base)
    out = Path(config.base.runtime.out)
    _check_out(config, runs, out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    drawn = [0]  # rows in leaderboard.png

    def done(run: FitConfig, result: dict | BaseException) -> None:
        rows.append(result_row(run, result))
        if on_result is not None:
            on_result(rows[-1], len(rows), len(runs))
        write_leaderboard(rank_rows(rows), out)

    def draw() -> None:
        """leaderboard.png after each run alone and once per stream (its runs end together: drawn per
        run, each picture of 8 runs was redrawn within a second)."""
        if drawn[0] != len(rows):
            key = ranking(rows)
            curves.plot_leaderboard(rank_rows(rows), out / "leaderboard.png", key=key, label=RANKED_BY[key])
            drawn[0] = len(rows)

    with hold_out(out, current_rank()):  # another sweep or a fit writing this folder at once is refused
        try:
            for stream in streams:
                alone = [run for run in stream if config.sequential or is_classic(run.model.student)]
                for run in alone:
                    done(run, _fit_alone(run))
                    draw()
                together = [run.replace(resume=_resumable(run)) for run in stream if run not in alone]
                if together:
                    train_stream(together, done)
        finally:  # also when a stop signal ends the sweep
            draw()
    return rank_rows(rows)


def _resumable(config: FitConfig) -> bool:
    return config.runtime.resume and (Path(config.runtime.out) / "last.pt").exists()


def _check_out(config: SweepConfig, runs: list[FitConfig], out: Path) -> None:
    """A sweep folder that already holds runs is continued (--resume) or replaced (--overwrite), never
    silently rewritten: each run would fail on its folder and the leaderboard record only failures."""
    runtime = config.base.runtime
    if runtime.resume or runtime.overwrite:
        return
    held = [Path(run.runtime.out).name for run in runs if any((Path(run.runtime.out) / n).exists() for n in RUN_FILES)]
    if held or (out / LEADERBOARD).exists():
        what = f"runs of this grid ({held[0]}{', ...' if len(held) > 1 else ''})" if held else "a sweep's leaderboard"
        raise FileExistsError(
            f"{out} already holds {what}: pass --resume to continue the sweep, --overwrite to start it again, "
            f"or choose another --out"
        )


def ranking(rows: list[dict]) -> str:
    """The row key the leaderboard ranks by (a key of `RANKED_BY`)."""
    return next((key for key in RANKED_BY if any(row.get(key) is not None for row in rows)), "test_accuracy")


def rank_rows(rows: list[dict]) -> list[dict]:
    """Best first by `ranking` (test accuracy, or the probe's with --probe), failures last."""
    key = ranking(rows)

    def score(row):
        value = row.get(key)
        return -1.0 if value is None else value

    ranked = sorted(rows, key=score, reverse=True)
    return [{**row, "rank": i + 1} for i, row in enumerate(ranked)]


def write_leaderboard(rows: list[dict], out: Path) -> None:
    """leaderboard.md and .csv (the sweep draws leaderboard.png)."""
    write_text_atomic(_markdown(rows), out / LEADERBOARD)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS} for row in rows)
    write_text_atomic(buffer.getvalue(), out / "leaderboard.csv")


def _markdown(rows: list[dict]) -> str:
    def cell(row, key):
        value = row.get(key)
        if value is None or value == "":
            return ""
        if key in ACCURACIES:
            return f"{100 * value:.2f}"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    reported = {key for row in rows for key, value in row.items() if value is not None}
    shown = [c for c in COLUMNS if c != "error" and (not c.startswith("probe_") or c in reported)]
    lines = ["| " + " | ".join(shown) + " |", "|" + "|".join(" --- " for _ in shown) + "|"]
    lines += ["| " + " | ".join(cell(row, c) for c in shown) + " |" for row in rows]
    failures = [f"- {row['run']}: {row['error']}" for row in rows if row.get("status") == "failed"]
    return (
        "\n".join(
            [
                "# Sweep leaderboard",
                "",
                f"Ranked by {RANKED_BY[ranking(rows)]}; accuracies in %.",
                "",
                *lines,
                *(["", "## Failed runs", "", *failures] if failures else []),
            ]
        )
        + "\n"
    )
