"""The engine: one optimizer step, one epoch, evaluation, the epochs of a run, and what every process
must agree on (a finite loss, a stop signal).

What a run records (checkpoints, metrics, summary, curves, logs, advice) is not here: the engine calls
its hooks (`Hook`) at fixed points, and a new output is a new hook (`trainer.outputs`). Under torchrun
each process trains on its share of every epoch (DDP); rank 0 evaluates.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from softlabels import threads
from softlabels.data import key_text
from softlabels.models.features import penultimate_features
from softlabels.progress import bar as progress_bar
from softlabels.runtime import autocast
from softlabels.stopping import Stopped
from softlabels.store.schema import NO_LABEL
from softlabels.views import flatten_views, nonfinite_rows, to_channels_last, to_device
from trainer.config import NonFiniteLoss
from trainer.losses import Embeddings
from trainer.resume import LAST, Progress
from trainer.setup import InputSpec, Run, Teacher, takes_channels_last
from trainer.summary import make_summary

RESUME_HINT = "run the same command with --resume to continue"


class Hook:
    """What a run records, called by the engine at fixed points; every method does nothing by default.

    In a run: `on_fit_start` once (after set-up and any resume); per epoch, `on_step_end` after each
    optimizer step and `on_epoch_end` after the epoch and its evaluation (the record is in
    `progress.history`); on a stop signal, `on_interrupt` when it came mid-epoch (progress holds the
    step reached), then `on_stop`; after the last epoch, `on_fit_end` with the summary `fit` returns;
    `teardown` last, always, also when the run failed. Hooks are called in list order, on every
    process that has them (`trainer.fit` gives rank 0 its outputs).
    """

    def on_fit_start(self, run: Run, progress: Progress) -> None:
        pass

    def on_step_end(self, run: Run, step: int, loss: torch.Tensor) -> None:
        """`step`: optimizer steps done in the whole run; `loss`: this step's, detached (a device tensor)."""

    def on_epoch_end(self, run: Run, progress: Progress, record: dict) -> None:
        pass

    def on_interrupt(self, run: Run, progress: Progress) -> None:
        pass

    def on_stop(self, run: Run, progress: Progress) -> None:
        pass

    def on_fit_end(self, run: Run, progress: Progress, summary: dict) -> None:
        pass

    def teardown(self, run: Run) -> None:
        pass


# ----------------------------------------------------------------------------- one step


def batch_to_device(batch, device: torch.device, dtype: torch.dtype | None = None):
    """(images, labels, targets) on the device; images in the loader's layout (`model_input` gives each
    model its own)."""
    images, labels, *rest = batch
    if labels.ndim == 2:  # R views of each decoded sample: (B / R, R, ...) -> (B, ...)
        images, labels, rest = flatten_views(images), labels.flatten(0, 1), [r.flatten(0, 1) for r in rest]
    images = to_device(images, device, dtype, channels_last=False)
    moved = [r.to(device, non_blocking=True) for r in rest]
    # (logits) or, for losses from embeddings, (logits, embeddings): `train_step` tells them apart
    targets = (moved[0] if len(moved) == 1 else tuple(moved)) if moved else None
    return images, labels.to(device, non_blocking=True), targets


def model_input(images, device: torch.device, normalize: nn.Module, dtype: torch.dtype | None, channels_last: bool):
    """A model's input from a batch of un-normalised views: in its dtype, normalised, then in channels_last
    where the model takes it. Normalising before the layout change gives the same bits (it is elementwise)
    and is faster: in channels_last the channel is the innermost axis, 3 elements long."""
    inputs = normalize(to_device(images, device, dtype, channels_last=False))
    return to_channels_last(inputs) if channels_last and not isinstance(inputs, dict) else inputs


class Inputs:
    """The inputs of several models from one batch, each distinct `InputSpec` prepared once (the runs of
    a shared-stream sweep with the same statistics, dtype and layout take the same tensor)."""

    def __init__(self, images, device: torch.device):
        self.images, self.device = images, device
        self.made: dict[InputSpec, tuple] = {}  # spec -> (input, its tensors' versions when made)
        self.versions = _versions(images)

    def get(self, spec: InputSpec, normalize: nn.Module):
        if spec not in self.made:
            made = model_input(self.images, self.device, normalize, spec.dtype, spec.channels_last)
            self.made[spec] = (made, _versions(made))
        return self.made[spec][0]

    def check_unchanged(self, spec: InputSpec) -> None:
        """After a model took `spec`'s input: one it changed in place (an in-place first layer) is made
        afresh for the next model; a change to the batch itself (a tensor sample taken as it is) cannot be undone."""
        made, versions = self.made.get(spec, (None, None))
        if made is not None and _versions(made) != versions:
            del self.made[spec]
            if _versions(self.images) != self.versions:
                raise ValueError(
                    "a student changed its input batch in place, which the other runs of this stream share: "
                    "train its runs with --sequential"
                )


def _versions(x) -> tuple[int, ...]:
    """Autograd's counters of in-place changes of a tensor, or of each tensor of a dict."""
    return tuple(t._version for t in (x.values() if isinstance(x, dict) else [x]) if isinstance(t, torch.Tensor))


def teacher_logits(teacher: Teacher, images: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    """The online teacher's float32 logits on the student's exact batch."""
    inputs = model_input(images, device, teacher.normalize, None, takes_channels_last(teacher.model))
    with torch.inference_mode(), autocast(device, amp):
        logits = teacher.model(inputs)
    return logits.float().clone()  # an ordinary tensor: inference tensors cannot be saved for backward


def train_step(run: Run, images, labels, targets, inputs=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch of un-normalised `images`; returns (loss, student logits), detached.

    `inputs`: the student's input when already prepared from `images` (`Inputs`, shared by a sweep's runs).
    """
    if run.teacher is not None:
        targets = teacher_logits(run.teacher, images, run.device, run.config.optim.amp)
    if inputs is None:
        inputs = model_input(images, run.device, run.normalize, run.input_dtype, run.input_spec.channels_last)
    embeddings = None
    with autocast(run.device, run.config.optim.amp):
        if isinstance(targets, tuple):  # a loss from embeddings: the student's features too
            found, features = penultimate_features(run.student, inputs)
            if found is None:
                raise ValueError("students must be classifiers: their last nn.Linear makes their output")
            logits = found
            targets, teacher_embeddings = targets
            embeddings = Embeddings(features, teacher_embeddings, run.projection)
        else:
            logits = run.student(inputs)
    loss = run.objective(logits, targets, labels, embeddings)
    if not _finite_everywhere(run, loss):
        raise NonFiniteLoss(f"the loss is {float(loss.detach())}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.config.optim.clip_grad_norm:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the loss-scaled ones
        torch.nn.utils.clip_grad_norm_(run.student.parameters(), run.config.optim.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return loss.detach(), logits.detach()


# ----------------------------------------------------------------------------- what every process agrees on


def _finite_everywhere(run: Run, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (one sync; the GradScaler syncs every step anyway)."""
    bad = (~torch.isfinite(loss.detach())).to(torch.float32)
    if run.rank.distributed:
        dist.all_reduce(bad)  # every rank stops at the same step, none waits forever in the next all-reduce
    return not bool(bad)


def stop_agreed(run: Run) -> bool:
    """Whether any process received a stop signal (all of them stop after the same step)."""
    if not run.rank.distributed:
        return run.stop.requested
    signum = torch.tensor([float(run.stop.signal or 0)], device=run.device)
    dist.all_reduce(signum, op=dist.ReduceOp.MAX)
    if signum.item() and not run.stop.requested:
        run.stop.signal = int(signum.item())  # another rank got it: every rank names the same signal
    return bool(signum.item())


def _barrier(run: Run) -> None:
    if run.rank.distributed:
        dist.barrier()


# ----------------------------------------------------------------------------- one epoch


class EpochInterrupted(Exception):
    """A stop signal ended an epoch early, after `step` optimizer steps; `totals` are its running sums."""

    def __init__(self, step: int, totals: list[float], seconds: float, lr: float):
        super().__init__(f"stopped after step {step}")
        self.step, self.totals, self.seconds, self.lr = step, totals, seconds, lr


def train_one_epoch(
    run: Run, epoch: int, start_step: int = 0, totals: list[float] | None = None, hooks: Sequence[Hook] = ()
) -> dict:
    """One pass over this process's share of the training set; returns loss, accuracy, images/s.

    `start_step` and `totals` continue an epoch a stop signal interrupted (a mid-epoch checkpoint):
    the sampler skips the batches already done. Raises NonFiniteLoss naming the epoch and step, and
    EpochInterrupted when a stop signal arrived (after finishing the step in progress).
    """
    run.student.train()
    run.sampler.set_epoch(epoch, start=sampler_start(run, start_step))
    sums = new_tally(run, totals)
    lr = run.optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    steps = run.steps_per_epoch or len(run.train_loader)
    bar = progress_bar(
        threads.paced(run.train_loader),  # threads follow the idle cores
        total=steps,
        initial=start_step,
        desc=f"epoch {epoch + 1}/{run.config.optim.epochs}",
        unit="batch",
        enabled=run.config.runtime.progress and run.rank.is_main,
        leave=False,
    )
    for step, batch in enumerate(bar, start=start_step):
        images, labels, targets = batch_to_device(batch, run.device, run.input_dtype)
        try:
            loss, logits = train_step(run, images, labels, targets)
        except NonFiniteLoss as err:
            samples = _nonfinite_samples(run, step - start_step, images, targets)
            named = f": the inputs or targets of sample(s) {', '.join(samples[:5])} hold NaN/inf values"
            where = f"{err} at epoch {epoch + 1}, step {step + 1} of {steps}"
            raise NonFiniteLoss(where + (named if samples else ""), samples) from None
        for hook in hooks:
            hook.on_step_end(run, epoch * steps + step, loss)
        tally(sums, loss, logits, labels)
        if step % 10 == 0 or step == steps - 1:
            _show(bar, sums, started)
        if stop_agreed(run) and step + 1 < steps:
            bar.close()
            raise EpochInterrupted(step + 1, sums.tolist(), time.perf_counter() - started, lr)
    bar.close()
    return epoch_stats(run, sums, lr, time.perf_counter() - started)


def sampler_start(run: Run, step: int) -> int:
    """The sampler item an epoch resumed at `step` starts from: items are decoded samples, each giving
    --views-per-decode views of a batch."""
    return step * run.items_per_batch


def new_tally(run: Run, totals: list[float] | None = None) -> torch.Tensor:
    """An epoch's running sums (loss x images, correct, images, labelled images) on the device,
    continuing `totals`."""
    if totals is not None and len(totals) == 3:  # a checkpoint from before labelled images were counted
        totals = [*totals, totals[2] if run.data.source.labelled else 0.0]
    return torch.tensor(totals or [0.0, 0.0, 0.0, 0.0], dtype=torch.float64, device=run.device)


def tally(sums: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Add one step to an epoch's running sums (no sync with the device). Accuracy counts the samples
    that have a label (`NO_LABEL` never equals a class)."""
    sums += torch.stack(
        [
            loss.double() * len(labels),
            (logits.argmax(1) == labels).sum().double(),
            torch.tensor(float(len(labels)), dtype=torch.float64, device=sums.device),
            (labels != NO_LABEL).sum().double(),
        ]
    )


def epoch_stats(run: Run, sums: torch.Tensor, lr: float, seconds: float) -> dict:
    """An epoch's loss, accuracy (over the labelled images) and images/s over every process, from its
    running sums."""
    if run.rank.distributed:
        dist.all_reduce(sums)
    loss_sum, correct, count, labelled = sums.tolist()
    return {
        "lr": lr,
        "train_loss": loss_sum / max(count, 1),
        "train_accuracy": correct / labelled if labelled else None,  # None: no labels
        "seconds": seconds,
        "images_per_second": count / max(seconds, 1e-9),
    }


def _nonfinite_samples(run: Run, batch: int, images, targets) -> list[str]:
    """The keys of the samples of this epoch's `batch`-th batch whose inputs or targets hold NaN/inf
    (the sampler hands out the same items again for the same epoch)."""
    rows = set(nonfinite_rows(images)) | set(nonfinite_rows(targets) if targets is not None else [])
    if not rows:
        return []
    size, per_decode = run.items_per_batch, run.config.data.views_per_decode
    items = list(run.sampler)[batch * size : (batch + 1) * size]  # (index, view(s), epoch)
    indices = sorted({int(items[row // per_decode][0]) for row in rows})  # R views of one sample per item
    return [key_text(run.data.source.keys[index]) for index in indices]


def _show(bar, totals: torch.Tensor, started: float) -> None:
    if bar.disable:
        return
    loss_sum, correct, count, labelled = totals.tolist()
    bar.set_postfix(
        loss=f"{loss_sum / count:.4f}",
        acc=f"{correct / labelled:.2%}" if labelled else "n/a",
        img_s=f"{count / max(time.perf_counter() - started, 1e-9):.0f}",
        refresh=False,
    )


@torch.no_grad()
def evaluate(runs: Sequence[Run]) -> list[dict]:
    """Cross-entropy and top-1 accuracy of each run's student over the held-out set (views of one
    geometry, each batch read once for all of them), in eval mode."""
    lead = runs[0]
    device, amp = lead.device, lead.config.optim.amp
    models = [run.bare_student for run in runs]
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    sums = [[0.0, 0, 0] for _ in runs]  # loss, correct, count
    shown = lead.config.runtime.progress
    for batch in progress_bar(lead.eval_loader, desc="evaluating", unit="batch", enabled=shown, leave=False):
        images, labels, _ = batch_to_device(batch, device)
        inputs = Inputs(images, device)
        for run, total in zip(runs, sums):
            with autocast(device, amp):
                logits = run.bare_student(inputs.get(run.input_spec, run.normalize)).float()
            inputs.check_unchanged(run.input_spec)
            total[0] += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            total[1] += int((logits.argmax(1) == labels).sum())
            total[2] += len(labels)
    for model, training in zip(models, was_training):
        model.train(training)
    return [
        {"eval_loss": loss / max(count, 1), "eval_accuracy": correct / max(count, 1)} for loss, correct, count in sums
    ]


# ----------------------------------------------------------------------------- the epochs of a run


def train(run: Run, progress: Progress, hooks: Sequence[Hook]) -> dict:
    """Epochs from `progress` to the last (or --stop-after), calling `hooks`; returns the summary.

    Raises Stopped (a stop signal: what was done is saved by the hooks) and NonFiniteLoss.
    """
    out = Path(run.config.runtime.out)
    try:
        for hook in hooks:
            hook.on_fit_start(run, progress)
        started = time.perf_counter()
        last = min(run.config.optim.epochs, run.config.runtime.stop_after or run.config.optim.epochs)
        try:
            for epoch in range(progress.epoch, last):
                _stop_between_epochs(run, progress, out)
                _run_epoch(run, progress, epoch, out, hooks)
        except Stopped:
            for hook in hooks:
                hook.on_stop(run, progress)
            raise
        summary = make_summary(run, progress, time.perf_counter() - started)
        for hook in hooks:
            hook.on_fit_end(run, progress, summary)
        return summary
    finally:
        teardown_hooks(hooks, run, failing=sys.exc_info()[1] is not None)  # in a `finally`: the error in flight
        run.close()  # persistent workers end with the run, also when it fails


def teardown_hooks(hooks: Sequence[Hook], run: Run, failing: bool) -> None:
    """Every hook's `teardown`, each even when an earlier one fails. A teardown's own error (a last
    picture on a full disk) never replaces the error that ended a `failing` run: it is raised only
    when the run itself ended well."""
    first: Exception | None = None
    for hook in hooks:
        try:
            hook.teardown(run)
        except Exception as err:
            first = first or err
    if first is not None and not failing:
        raise first


def _stop_between_epochs(run: Run, progress: Progress, out: Path) -> None:
    """A stop signal that arrived during setup, evaluation or the last checkpoint: everything is saved."""
    if stop_agreed(run):
        saved = f"{out / LAST} holds epoch {progress.epoch}" if progress.epoch else "nothing to save yet"
        raise Stopped(f"stopped by {run.stop.name} before epoch {progress.epoch + 1}: {saved}; {RESUME_HINT}")


def _run_epoch(run: Run, progress: Progress, epoch: int, out: Path, hooks: Sequence[Hook]) -> None:
    try:
        stats = train_one_epoch(run, epoch, progress.step, progress.totals, hooks)
    except NonFiniteLoss as err:
        raise explain_non_finite(err, out, progress) from None
    except EpochInterrupted as stop:
        raise interrupt(run, progress, epoch, stop, hooks) from None
    held_out = None
    if run.eval_loader is not None:
        started = time.perf_counter()
        held_out = evaluate([run])[0]
        held_out["eval_seconds"] = time.perf_counter() - started
    finish_epoch(run, progress, epoch, stats, hooks, held_out)


def explain_non_finite(err: NonFiniteLoss, out: Path, progress: Progress) -> NonFiniteLoss:
    """The error of a run whose loss became non-finite: what is kept, and what to try."""
    kept = (
        f"{out / LAST} (epoch {progress.epoch}{f', step {progress.step}' if progress.step else ''}) is intact"
        if (out / LAST).exists()
        else "no checkpoint was written yet"
    )
    advice = (
        "Fix or leave out those samples"
        if err.samples
        else "Lower --lr or --temperature, keep --clip-grad-norm on, or check the data"
    )
    return NonFiniteLoss(
        f"{err}: the run stopped before that step changed the weights; {kept}. {advice}; --resume continues "
        f"from the checkpoint",
        err.samples,
    )


def interrupt(run: Run, progress: Progress, epoch: int, stop: EpochInterrupted, hooks: Sequence[Hook]) -> Stopped:
    """Record a mid-epoch stop in `progress`, let the hooks save it; returns the `Stopped` to raise."""
    progress.step, progress.totals, progress.seconds = stop.step, stop.totals, progress.seconds + stop.seconds
    progress.lr = stop.lr if progress.lr is None else progress.lr  # stopped again: the epoch began before
    for hook in hooks:
        hook.on_interrupt(run, progress)
    _barrier(run)
    return Stopped(
        f"stopped by {run.stop.name} at epoch {epoch + 1}, step {stop.step} of {run.steps_per_epoch}: "
        f"saved {Path(run.config.runtime.out) / LAST}; {RESUME_HINT}"
    )


def finish_epoch(
    run: Run, progress: Progress, epoch: int, stats: dict, hooks: Sequence[Hook], held_out: dict | None = None
) -> None:
    """Record a finished epoch (its training `stats` and `held_out` evaluation) and call the hooks."""
    if progress.seconds:  # an epoch resumed mid-way: its record counts both parts, as if never stopped
        images = stats["images_per_second"] * stats["seconds"]
        stats["seconds"] += progress.seconds
        stats["images_per_second"] = images / max(stats["seconds"], 1e-9)
    if progress.lr is not None:
        stats["lr"] = progress.lr  # when the epoch began
    progress.step, progress.totals, progress.seconds, progress.lr = 0, None, 0.0, None
    record = {"epoch": epoch + 1, **stats, **(held_out or {})}
    progress.epoch = epoch + 1
    progress.history.append(record)
    progress.note_best(record)
    for hook in hooks:
        hook.on_epoch_end(run, progress, record)
    _barrier(run)
