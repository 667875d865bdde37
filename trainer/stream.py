"""Shared-stream sweeps: the runs of a sweep whose batches are the same train from one loader.

Runs that agree on everything that shapes a batch (`schedule_key`: the data, the seed, the epochs,
the batch size, the augmentation, views per decode, the cache, the ensemble, the online teacher)
form a stream. Each batch is read, decoded and augmented once and handed to every student in turn;
each run keeps its own student, optimizer, schedule, loss, torch RNG state, run folder and outputs
(the hooks of `trainer.outputs`), so its weights are bit for bit those of the same run trained alone
(`trainer fit`). From labels, students whose views differ in geometry (size, resize) get a stream
each; students that differ only in statistics share the views and normalise them on the device.

A run whose loss becomes non-finite (or whose set-up fails) stops alone and is reported failed; a
stop signal stops every run after the same step, each saving its last.pt, and `--resume` continues
them all. Under torchrun each process feeds its shard to every student, each with its own DDP wrapper.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from softlabels import threads
from softlabels.progress import bar as progress_bar
from softlabels.runtime import Rank, cpu_threads, current_rank
from softlabels.stopping import Stopped, StopRequest, stop_on_signals
from softlabels.store import read_info
from trainer import checkpoints
from trainer.config import FitConfig, NonFiniteLoss, warn_untrained_classifier
from trainer.engine import (
    RESUME_HINT,
    EpochInterrupted,
    Hook,
    Inputs,
    batch_to_device,
    epoch_stats,
    evaluate,
    explain_non_finite,
    finish_epoch,
    interrupt,
    new_tally,
    sampler_start,
    stop_agreed,
    tally,
    teacher_logits,
    teardown_hooks,
    train_step,
)
from trainer.loop import check_out, device_for, hold_out, process_group
from trainer.outputs import output_hooks
from trainer.resume import LAST, Progress, restore
from trainer.setup import Feed, Run, build_feed, build_run, load_views, student_prep
from trainer.summary import make_summary

# What may differ between the runs of one stream: it shapes the student and its loss, never a batch.
# (The temperature shapes the targets of a several-teacher cache: see `schedule_key`.)
PER_RUN = {
    "model": ("student", "mean", "std"),
    "objective": ("loss", "temperature", "alpha", "label_smoothing"),
    "optim": ("lr", "optimizer", "weight_decay", "schedule", "warmup_epochs", "clip_grad_norm"),
    "runtime": ("out", "resume", "log"),
}

Done = Callable[[FitConfig, "dict | BaseException"], None]  # a run's summary, or why it failed


def schedule_key(config: FitConfig, temperature_shapes_targets: bool = False) -> str:
    """Everything in `config` that changes what a batch holds; runs with equal keys share a stream."""
    groups = {name: asdict(getattr(config, name)) for name in ("data", "model", "objective", "optim", "runtime")}
    for group, names in PER_RUN.items():
        for name in names:
            if not (name == "temperature" and temperature_shapes_targets):
                groups[group].pop(name)
    embeddings = config.make_objective().needs_embedding  # a batch holds them only when its loss reads them
    return json.dumps({**groups, "embeddings": embeddings}, sort_keys=True, default=str)


def group_streams(configs: Sequence[FitConfig]) -> list[list[FitConfig]]:
    """The runs in streams of equal `schedule_key`, in order of their first run."""
    streams: dict[str, list[FitConfig]] = {}
    for config in configs:
        caches = config.runtime.cache  # several: one teacher's targets (trainer.combined), so the first's members
        mixed = bool(caches) and len(read_info(caches[0]).members) > 1  # an ensemble's targets depend on T
        streams.setdefault(schedule_key(config, mixed), []).append(config)
    return list(streams.values())


@dataclass
class Member:
    """One run of a stream: its engine state and outputs, and its own torch RNG state."""

    config: FitConfig
    run: Run
    progress: Progress
    hooks: list[Hook]
    rng: dict
    sums: torch.Tensor | None = None  # this epoch's running sums, once the run has joined the epoch
    lr: float = 0.0
    joined: float = 0.0  # when it joined this epoch (perf_counter)
    loss: torch.Tensor | None = None  # its latest step's, for the progress bar
    failure: BaseException | None = None
    lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # its --out, held until teardown
    reported: bool = False  # `on_done` has its result
    started: float = field(default_factory=time.perf_counter)

    @property
    def position(self) -> tuple[int, int]:
        return self.progress.epoch, self.progress.step

    @contextlib.contextmanager
    def own_rng(self):
        """Torch's global RNG as this run alone would have it (dropout, random layers), then saved back."""
        checkpoints.set_rng_state(self.rng)
        try:
            yield
        finally:
            self.rng = checkpoints.rng_state()


def train_stream(configs: Sequence[FitConfig], on_done: Done) -> None:
    """Train runs of one schedule together, calling `on_done` as each finishes or fails.

    Raises Stopped after a stop signal (every run saved at the same step), like `trainer.fit`.
    """
    first = configs[0]
    rank = current_rank()
    device = device_for(first, rank)
    runtime = first.runtime
    with (
        cpu_threads(device, runtime.workers, runtime.threads, hold=True),
        process_group(rank, device),
        stop_on_signals(runtime.stop_signals) as stop,
    ):
        pending = list(configs)
        while pending:
            pending = _train_feed(pending, rank, device, stop, on_done)


def _train_feed(
    configs: list[FitConfig], rank: Rank, device: torch.device, stop: StopRequest, on_done: Done
) -> list[FitConfig]:
    """Train the runs that share the views of the first one that loads; returns the others."""
    feed, configs = _open_feed(configs, rank, device, on_done)
    if feed is None:
        return []
    members, others = [], []
    try:
        for config in configs:
            try:
                geometry = student_prep(config, feed.data).geometry
            except Exception as err:  # this student's input (an unknown model): this run fails alone
                on_done(config, err)
                continue
            if geometry != feed.data.image_prep.geometry:
                others.append(config)  # from labels, views made for another input: a stream of its own
                continue
            member = _join(config, rank, device, stop, feed, on_done)
            if member is not None:
                members.append(member)
        if members:
            _train(members, feed, on_done)
    finally:
        feed.close()
    return others


def _open_feed(configs: list[FitConfig], rank: Rank, device: torch.device, on_done: Done):
    """The feed of the first run whose data loads; a run whose data fails is reported failed."""
    for i, config in enumerate(configs):
        try:
            data, teacher = load_views(config)
            return build_feed(config, rank, device, data, teacher, student_prep(config, data)), configs[i:]
        except Exception as err:  # that run's data or input: reported, the next one tries
            on_done(config, err)
    return None, []


def _join(config: FitConfig, rank: Rank, device: torch.device, stop: StopRequest, feed: Feed, on_done: Done):
    """A run built on the shared feed and resumed from its last.pt; None when its set-up failed."""
    out = Path(config.runtime.out)
    lock = contextlib.ExitStack()
    try:
        check_out(config, out, rank)
        lock.enter_context(hold_out(out, rank))
        run = build_run(config, rank, device, stop, feed)
        progress = restore(run, out) if config.runtime.resume and (out / LAST).exists() else Progress()
        warn_untrained_classifier(config)
    except Exception as err:
        lock.close()
        on_done(config, err)
        return None
    run.teacher = None  # the stream asks the online teacher once per batch for every run
    hooks = [*(output_hooks(name=out.name) if rank.is_main else [])]
    return Member(config, run, progress, hooks, checkpoints.rng_state(), lock=lock)


def _train(members: list[Member], feed: Feed, on_done: Done) -> None:
    """The epochs of every run, in lockstep from the earliest position any of them resumes at."""
    config = members[0].config

    def report(member: Member, result) -> None:
        _teardown(member, failing=isinstance(result, BaseException))
        member.reported = True
        on_done(member.config, result)

    last = min(config.optim.epochs, config.runtime.stop_after or config.optim.epochs)
    try:
        for member in members:
            with member.own_rng():
                for hook in member.hooks:
                    hook.on_fit_start(member.run, member.progress)
        for epoch in range(min(m.position for m in members)[0], last):
            live = _stop_between_epochs([m for m in members if not m.reported])
            for member in _epoch([m for m in live if m.progress.epoch <= epoch], feed, epoch):
                report(member, member.failure)
        for member in [m for m in members if not m.reported]:
            with member.own_rng():
                summary = make_summary(member.run, member.progress, time.perf_counter() - member.started)
                for hook in member.hooks:
                    hook.on_fit_end(member.run, member.progress, summary)
            report(member, summary)
    except Stopped:
        raise
    except Exception as err:  # what no single run caused (the loader): every run still training fails
        for member in [m for m in members if not m.reported]:
            report(member, err)
    finally:
        for member in members:  # a stop signal or Ctrl-C: the hooks saved what they had
            _teardown(member, failing=True)


def _teardown(member: Member, failing: bool) -> None:
    with member.own_rng():
        teardown_hooks(member.hooks, member.run, failing)
    member.hooks = []
    member.lock.close()


def _stop_between_epochs(live: list[Member]) -> list[Member]:
    if live and stop_agreed(live[0].run):
        for member in live:
            _on_stop(member)
        run = live[0].run
        raise Stopped(f"stopped by {run.stop.name} between epochs: every run saved its last.pt; {RESUME_HINT}")
    return live


def _on_stop(member: Member) -> None:
    with member.own_rng():
        for hook in member.hooks:
            hook.on_stop(member.run, member.progress)


def _epoch(members: list[Member], feed: Feed, epoch: int) -> list[Member]:
    """One epoch of the shared loader, each batch to every run at or past its position; returns the
    runs whose loss became non-finite (each stops alone, with its `failure`)."""
    if not members:
        return []
    lead = members[0].run
    steps = lead.steps_per_epoch
    start = min(m.progress.step if m.progress.epoch == epoch else 0 for m in members)
    feed.sampler.set_epoch(epoch, start=sampler_start(lead, start))
    live, failed = list(members), []
    bar = progress_bar(
        threads.paced(feed.train_loader),  # threads follow the idle cores
        total=steps,
        initial=start,
        desc=f"epoch {epoch + 1}/{lead.config.optim.epochs}, {len(live)} runs",
        unit="batch",
        enabled=lead.config.runtime.progress and lead.rank.is_main,
        leave=False,
    )
    for step, batch in enumerate(bar, start=start):
        images, labels, targets = batch_to_device(batch, lead.device)
        if feed.teacher is not None:
            targets = teacher_logits(feed.teacher, images, lead.device, lead.config.optim.amp)
        inputs = Inputs(images, lead.device)  # each distinct input normalised once, for every run that takes it
        for member in list(live):
            if (epoch, step) >= member.position and not _step(member, epoch, step, inputs, labels, targets):
                live.remove(member)
                failed.append(member)
        if step % 10 == 0 or step == steps - 1:
            _show(bar, live)
        if not live:
            break
        if stop_agreed(lead) and step + 1 < steps:
            bar.close()
            _interrupt(live, epoch, step)
    bar.close()
    _end_epoch(live, feed)
    return failed


def _step(member: Member, epoch: int, step: int, inputs: Inputs, labels, targets) -> bool:
    """One optimizer step of one run; False when its loss became non-finite (the run stops alone)."""
    run = member.run
    if member.sums is None:  # joins the epoch here: as the run alone would start (or resume) it
        run.student.train()
        member.sums = new_tally(run, member.progress.totals if member.progress.epoch == epoch else None)
        member.lr, member.joined = run.optimizer.param_groups[0]["lr"], time.perf_counter()
    with member.own_rng():
        try:
            loss, logits = train_step(run, inputs.images, labels, targets, inputs.get(run.input_spec, run.normalize))
        except NonFiniteLoss as err:
            where = NonFiniteLoss(f"{err} at epoch {epoch + 1}, step {step + 1} of {run.steps_per_epoch}")
            member.failure = explain_non_finite(where, Path(run.config.runtime.out), member.progress)
            return False
        finally:
            inputs.check_unchanged(run.input_spec)
        for hook in member.hooks:
            hook.on_step_end(run, epoch * run.steps_per_epoch + step, loss)
    tally(member.sums, loss, logits, labels)
    member.loss = loss
    return True


def _show(bar, live: list[Member]) -> None:
    if bar.disable:
        return
    losses = {Path(m.config.runtime.out).name: f"{float(m.loss):.4f}" for m in live if m.loss is not None}
    bar.set_postfix(refresh=False, **losses)


def _interrupt(live: list[Member], epoch: int, step: int) -> None:
    """A stop signal mid-epoch: every run that joined saves its last.pt at this step; raises Stopped."""
    for member in live:
        if member.sums is None:
            continue  # resumes later in this epoch: its last.pt already holds its position
        seconds = time.perf_counter() - member.joined
        with member.own_rng():
            interrupt(
                member.run,
                member.progress,
                epoch,
                EpochInterrupted(step + 1, member.sums.tolist(), seconds, member.lr),
                member.hooks,
            )
    for member in live:
        _on_stop(member)
    run = live[0].run
    raise Stopped(
        f"stopped by {run.stop.name} at epoch {epoch + 1}, step {step + 1} of {run.steps_per_epoch}: "
        f"{len(live)} run(s) saved their last.pt; {RESUME_HINT}"
    )


def _end_epoch(live: list[Member], feed: Feed) -> None:
    """Each run's epoch record: its training sums, one shared pass over the held-out set, its hooks."""
    stats = []
    for member in live:
        assert member.sums is not None
        stats.append(epoch_stats(member.run, member.sums, member.lr, time.perf_counter() - member.joined))
        member.sums = None
    held_out: list[dict | None] = [None] * len(live)
    if feed.eval_loader is not None and live:
        started = time.perf_counter()
        records = evaluate([m.run for m in live])
        held_out = [{**record, "eval_seconds": time.perf_counter() - started} for record in records]
    for member, epoch_record, record in zip(live, stats, held_out):
        with member.own_rng():
            finish_epoch(member.run, member.progress, member.progress.epoch, epoch_record, member.hooks, record)
