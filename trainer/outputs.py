"""What a run writes and says, as engine hooks: checkpoints (last.pt, best.pt, best weights),
metrics.jsonl/.csv, curves.png, summary.json, the per-epoch line, the extra loggers (`--log`), and the
advice about overfitting few stored views. `output_hooks` lists them in the order they run; rank 0
alone has them. A new output is a new `Hook` here, added to that list.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from softlabels import store
from softlabels.build.config import SAFE_VIEW_USES
from trainer import checkpoints, curves
from trainer.config import METRIC_FIELDS, FitConfig, OverfitRiskWarning
from trainer.engine import Hook
from trainer.logs import RunLog
from trainer.probes import Probes
from trainer.projection import PROJECTION, save_projection
from trainer.resume import BEST, LAST, Progress, checkpoint_state
from trainer.setup import Run
from trainer.summary import make_summary, view_uses


class OverfitAdvice(Hook):
    """Warns, before the first epoch, of the trap of long schedules on few stored views without augmentation."""

    def on_fit_start(self, run: Run, progress: Progress) -> None:
        warn_if_views_run_out(run.config, run.data.caches)


class EpochReport(Hook):
    """One line per epoch under its progress bar, starting with the run's `name` when given (a sweep
    training several runs at once)."""

    def __init__(self, name: str | None = None) -> None:
        self.prefix = f"{name}: " if name else ""

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        if not run.config.runtime.progress:
            return
        held_out = (
            f", eval loss {record['eval_loss']:.4f} acc {record['eval_accuracy']:.2%}"
            if "eval_accuracy" in record
            else ""
        )
        train = "" if record["train_accuracy"] is None else f" acc {record['train_accuracy']:.2%}"
        held_out += "".join(f", {name} {value:.2%}" for name, value in record.items() if name.startswith("probe_"))
        tqdm.write(
            f"{self.prefix}epoch {record['epoch']}/{run.config.optim.epochs}: train loss {record['train_loss']:.4f}"
            f"{train}{held_out}, {record['images_per_second']:.0f} images/s"
        )


class Loggers(Hook):
    """The extra loggers of `--log` (TensorBoard): the loss and lr per step, every metric per epoch."""

    def __init__(self) -> None:
        self.log: RunLog | None = None

    def on_fit_start(self, run: Run, progress: Progress) -> None:
        first_step = progress.epoch * run.steps_per_epoch + progress.step
        self.log = RunLog(run.config.runtime.log, Path(run.config.runtime.out), first_step)

    def on_step_end(self, run: Run, step: int, loss) -> None:
        if self.log is not None and self.log.per_step:  # float(loss) waits for the device: only when logged
            self.log.step(step, float(loss), run.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        if self.log is not None:
            self.log.epoch(record)

    def teardown(self, run: Run) -> None:
        if self.log is not None:
            self.log.close()


class Checkpoints(Hook):
    """last.pt after every epoch and at a mid-epoch stop (what --resume needs); best.pt and its weights
    file (what `softlabels build --weights` reads) when the epoch is the best so far."""

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        self.on_interrupt(run, progress)
        if progress.is_best(record):
            out = Path(run.config.runtime.out)
            best = checkpoint_state(run, progress, resumable=False)
            checkpoints.save_checkpoint(best, out / BEST)
            checkpoints.save_weights(best, run.config.model.student, (out / BEST).with_suffix(""))
            if run.projection is not None:  # trained with the student, kept apart from its weights
                save_projection(run.projection, run.objective.name, out / PROJECTION)

    def on_interrupt(self, run: Run, progress: Progress) -> None:
        """last.pt at the current step: what `--resume` needs to continue the epoch exactly."""
        state = checkpoint_state(run, progress, resumable=True)
        checkpoints.save_checkpoint(state, Path(run.config.runtime.out) / LAST)


class Metrics(Hook):
    """metrics.jsonl (every record) and metrics.csv (METRIC_FIELDS), rewritten after every epoch."""

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        write_metrics(progress.history, Path(run.config.runtime.out))


class Curves(Hook):
    """curves.png: loss and accuracy against epoch, redrawn after an epoch once `REDRAW_S` seconds have
    passed since the run started or was last drawn, and always when the run ends (done, stopped or
    failed). A drawing costs 0.2-1 s: after every epoch of every run it was a large share of a sweep of
    short epochs (BENCHMARKS.md, "Shared-stream sweeps"); metrics.csv still has every epoch at once."""

    REDRAW_S = 60.0

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.drawn = -1  # epochs in the picture on disk
        self.progress: Progress | None = None  # the run's, which the engine updates in place

    def on_fit_start(self, run: Run, progress: Progress) -> None:
        self.progress = progress

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        if time.monotonic() - self.last >= self.REDRAW_S:
            self._draw(run, progress)

    def teardown(self, run: Run) -> None:
        progress = self.progress
        if progress is not None and progress.history and self.drawn != len(progress.history):
            self._draw(run, progress)

    def _draw(self, run: Run, progress: Progress) -> None:
        curves.plot_curves(progress.history, Path(run.config.runtime.out) / "curves.png", title=title(run.config))
        self.last, self.drawn = time.monotonic(), len(progress.history)


class Summary(Hook):
    """summary.json after every epoch, when a stop signal ends the run, and at the end."""

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        self._write(make_summary(run, progress, None), run)

    def on_stop(self, run: Run, progress: Progress) -> None:
        # launchers such as torchrun report their own exit status: the summary says it too
        self._write({**make_summary(run, progress, None), "stopped_by": run.stop.name, "step": progress.step}, run)

    def on_fit_end(self, run: Run, progress: Progress, summary: dict) -> None:
        self._write(summary, run)

    @staticmethod
    def _write(summary: dict, run: Run) -> None:
        checkpoints.write_json_atomic(summary, Path(run.config.runtime.out) / "summary.json")


def output_hooks(name: str | None = None) -> list[Hook]:
    """The outputs of `trainer fit`, in the order they run (`name`: the run's, in its epoch lines)."""
    return [OverfitAdvice(), Probes(), EpochReport(name), Loggers(), Checkpoints(), Metrics(), Curves(), Summary()]


def write_metrics(history: list[dict], out: Path) -> None:
    checkpoints.write_text_atomic("".join(json.dumps(r, sort_keys=True) + "\n" for r in history), out / "metrics.jsonl")
    rows = [",".join(METRIC_FIELDS)]
    rows += [",".join("" if r.get(k) is None else f"{r[k]:.6g}" for k in METRIC_FIELDS) for r in history]
    checkpoints.write_text_atomic("\n".join(rows) + "\n", out / "metrics.csv")


def title(config: FitConfig) -> str:
    """The curves' title: the student, the loss, and the settings that shape it."""
    objective = config.make_objective()
    names = {"temperature": "T", "alpha": "alpha"}
    detail = "".join(f" {names[s]}={getattr(objective, s):g}" for s in objective.loss.settings)
    return f"{config.model.student}, {objective.name}{detail}"


def warn_if_views_run_out(config: FitConfig, caches: Sequence[store.CacheInfo]) -> None:
    """The trap of long schedules on few stored views without augmentation (SAFE_VIEW_USES)."""
    uses = view_uses(config, caches)
    if not caches or uses is None or uses <= SAFE_VIEW_USES or config.data.augment != "none":
        return
    cache = min(caches, key=lambda c: c.layout.num_views)
    if cache.preprocessing is not None and not cache.preprocessing.is_image:
        return  # measured on images, where an augmentation is the way out
    views = cache.layout.num_views
    warnings.warn(
        f"each of the cache's {views} stored view(s) will be seen {uses:.0f} times with no augmentation: past "
        f"~{SAFE_VIEW_USES} uses a student overfits fixed targets (measured on CIFAR-10, BENCHMARKS.md 'Where caches "
        f"teach best': one view seen 15 times reached 61.4%, tied with 16 replayed views; seen 30 times, 59.4% against "
        f"64.6% from 16 replayed views; on 1,000 images for 80 epochs, 4 replayed views (20 uses) reached 48.7% "
        f"and one view (80 uses) 45.4%, against 58.1% from 16 views and 51.7% from labels + augmentation). Build "
        f"about one view per 5 epochs with the augmentation you train with (softlabels build --views "
        f"{max(2, round(config.optim.epochs / 5))} --augment ...), or add --augment ... --inconsistent-augment "
        f"(as good as replay for weak augmentations such as cifar; 3-4 points behind it for random-resized crops)",
        OverfitRiskWarning,
        stacklevel=3,
    )
