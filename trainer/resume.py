"""Resume: the progress a run carries across epochs (`Progress`), the checkpoint state it saves, and
`restore`, which loads last.pt back into a freshly built run after checking it fits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from softlabels import threads
from trainer import checkpoints
from trainer.setup import Run

LAST = "last.pt"  # what --resume continues from
BEST = "best.pt"  # the weights of the best epoch (best eval accuracy, or the latest without evaluation)


@dataclass
class Progress:
    """The state that survives across epochs and resumes."""

    epoch: int = 0  # epochs finished
    history: list = field(default_factory=list)
    best_accuracy: float | None = None
    best_epoch: int | None = None
    step: int = 0  # optimizer steps done in epoch `epoch` (a mid-epoch checkpoint after a stop signal)
    totals: list | None = None  # that epoch's running sums (loss, correct, images, labelled images)
    seconds: float = 0.0  # and the seconds it had run
    lr: float | None = None  # and its learning rate when it began (the epoch's record)

    def note_best(self, record: dict) -> None:
        """Keep the best eval accuracy and its epoch."""
        accuracy = record.get("eval_accuracy")
        if accuracy is not None and (self.best_accuracy is None or accuracy > self.best_accuracy):
            self.best_accuracy, self.best_epoch = accuracy, record["epoch"]

    def is_best(self, record: dict) -> bool:
        """Whether this epoch's weights are the best so far: best eval accuracy, or the latest without evaluation."""
        return record.get("eval_accuracy") is None or self.best_epoch == record["epoch"]


def checkpoint_state(run: Run, progress: Progress, resumable: bool) -> dict:
    state = {
        "model": {k: v.detach().cpu() for k, v in run.bare_student.state_dict().items()},
        "config": run.config.to_dict(),
        "identity": run.data.identity,
        "cache_fingerprint": run.data.cache.fingerprint if run.data.cache else None,
        "preprocessing": run.student_prep.to_dict(),
        "classes": run.data.classes,
        "epoch": progress.epoch,
        "best_accuracy": progress.best_accuracy,
    }
    if resumable:
        state.update(
            optimizer=run.optimizer.state_dict(),
            scheduler=run.scheduler.state_dict(),
            scaler=run.scaler.state_dict(),
            rng=checkpoints.rng_state(),
            history=progress.history,
            best_epoch=progress.best_epoch,
        )
        if run.projection is not None:
            state.update(projection=run.projection.state_dict())
        if (held := threads.held_threads()) is not None:  # a resumed run sums its gradients the same way
            state.update(threads=held)
        if progress.step:  # stopped mid-epoch by a signal
            state.update(
                step=progress.step, epoch_totals=progress.totals, epoch_seconds=progress.seconds, epoch_lr=progress.lr
            )
    return state


def restore(run: Run, out: Path) -> Progress:
    """Load OUT/last.pt into the run (weights, optimizer, schedule, scaler, RNG) after checking it fits."""
    path = out / LAST
    state = checkpoints.load_checkpoint(path)
    checkpoints.check_resumable(state, run.config.identity(), run.data.identity, path)
    run.bare_student.load_state_dict(state["model"])
    if run.projection is not None:
        run.projection.load_state_dict(state["projection"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    checkpoints.set_rng_state(state["rng"])
    threads.hold(state.get("threads"))
    return Progress(
        int(state["epoch"]),
        list(state["history"]),
        state["best_accuracy"],
        state.get("best_epoch"),
        step=int(state.get("step", 0)),
        totals=state.get("epoch_totals"),
        seconds=float(state.get("epoch_seconds", 0.0)),
        lr=state.get("epoch_lr"),
    )
