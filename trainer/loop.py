"""The training loop: `FitConfig` -> `fit` (setup, resume, epochs, outputs) built on `train_one_epoch`
and `evaluate`.

Targets come from one of three places, in one code path: a cache (`--cache`, the teacher is never
loaded), a teacher run inside the loop on the student's exact batch (`--teacher`, online KD), or the
labels alone. Under torchrun each process trains on its share of every epoch (DDP); rank 0 evaluates
and writes the run's files.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import resource
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from softlabels import store
from softlabels.build_config import SAFE_VIEW_USES
from softlabels.datasets import open_dataset
from softlabels.inputs import Preprocessing, data_input
from softlabels.pipeline import Normalize, flatten_views, stack, to_device
from softlabels.progress import bar as progress_bar
from softlabels.replay import EpochSampler
from softlabels.runtime import Rank, autocast, cpu_threads, current_rank, prepare_model, resolve_device
from softlabels.stopping import Stopped, StopRequest, stop_on_signals
from softlabels.teachers import load_teacher
from trainer import checkpoints, plots
from trainer.config import (
    METRIC_FIELDS,
    ONECYCLE_RISE,
    ONECYCLE_START,
    FitConfig,
    NonFiniteLoss,
    OverfitRiskWarning,
    check_config,
    check_mixed_views,
)
from trainer.data import (
    TrainingData,
    cached_training_data,
    close_loader,
    eval_dataset,
    labelled_training_data,
    make_loader,
)
from trainer.logs import RunLog
from trainer.losses import Objective
from trainer.students import create_student, labelled_input, probe_student, student_input

# ----------------------------------------------------------------------------- setup


@dataclass
class Teacher:
    """An online teacher: model in eval mode and the normalisation it expects."""

    model: nn.Module
    normalize: nn.Module


@dataclass
class Run:
    """What `fit` assembles from a config before the first epoch."""

    config: FitConfig
    rank: Rank
    device: torch.device
    data: TrainingData
    sampler: EpochSampler
    train_loader: torch.utils.data.DataLoader
    eval_loader: torch.utils.data.DataLoader | None
    student: nn.Module  # DDP-wrapped under torchrun
    normalize: nn.Module
    student_prep: Preprocessing
    teacher: Teacher | None
    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    log: RunLog = field(default_factory=lambda: RunLog((), Path(".")))
    steps_per_epoch: int = 0
    stop: StopRequest = field(default_factory=StopRequest)

    @property
    def bare_student(self) -> nn.Module:
        return getattr(self.student, "module", self.student)

    @property
    def input_dtype(self) -> torch.dtype | None:
        return _input_dtype(self.bare_student)


def _input_dtype(model: nn.Module) -> torch.dtype | None:
    """The floating dtype of a model's parameters: floating tensor samples are cast to it."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def load_data(config: FitConfig) -> tuple[TrainingData, Teacher | None, Preprocessing]:
    """The training data, the online teacher when there is one, and the student's input.

    With a cache or an online teacher the views are the teacher's, and the student takes them as they
    are (only its statistics resolve); from labels alone the views are made for the student's own input.
    """
    data, runtime, seed, model = config.data, config.runtime, config.optim.seed, config.model
    if runtime.cache:
        training = cached_training_data(
            runtime.cache,
            data.dataset,
            data_root=runtime.data_root,
            download=runtime.download,
            memory_budget=runtime.cache_memory_mb << 20,
            subset=data.subset,
            augment=data.augment,
            seed=seed,
            allow_changed_augment=data.inconsistent_augment,
            ensemble=config.objective.ensemble,
            temperature=config.objective.temperature,
            views_per_decode=data.views_per_decode,
            verify=runtime.verify,
            check_content=runtime.check_content,
        )
        check_mixed_views(config, training.cache)
        return training, None, student_input(model.student, training.image_prep, model.mean, model.std)
    assert data.dataset is not None  # check_config: --cache or --dataset
    source = open_dataset(data.dataset, data.split, runtime.data_root, runtime.download)
    if not config.objective.teacher:
        channels = len(model.mean) if model.mean else None
        prep = labelled_input(
            model.student,
            data_input(source.defaults, channels),
            runtime.weights,
            runtime.trust_checkpoint,
            model.mean,
            model.std,
            model.image_size,
        )
        return labelled_training_data(source, data.subset, data.augment, seed, prep), None, prep
    loaded = load_teacher(
        config.objective.teacher,
        runtime.weights,
        num_classes=len(source.classes),
        trust_checkpoint=runtime.trust_checkpoint,
        data=data_input(source.defaults),
    )
    training = labelled_training_data(source, data.subset, data.augment, seed, loaded.input)
    teacher = Teacher(loaded.model.eval(), Normalize(loaded.input))
    views = replace(loaded.input, **_statistics(data_input(source.defaults, loaded.input.channels)))
    return training, teacher, student_input(model.student, views, model.mean, model.std)


def _statistics(prep: Preprocessing) -> dict:
    return {"mean": prep.mean, "std": prep.std}


def build_run(config: FitConfig, rank: Rank, device: torch.device) -> Run:
    data, teacher, prep = load_data(config)
    per_decode = config.data.views_per_decode
    sampler = EpochSampler(
        data.indices,
        config.optim.seed,
        data.schedule,
        rank=rank.rank,
        world_size=rank.world_size,
        per_decode=per_decode,
    )
    train_loader = make_loader(
        data.dataset,
        config.optim.batch_size // per_decode,
        config.runtime.workers,
        device,
        sampler,
        config.runtime.start_method,
    )
    held_out = eval_dataset(
        config.runtime.eval_dataset, data.source, prep, config.runtime.data_root, config.runtime.download
    )
    eval_loader = (
        make_loader(
            held_out,
            max(config.optim.batch_size, 256),
            config.runtime.workers,
            device,
            start_method=config.runtime.start_method,
        )
        if held_out is not None and rank.is_main
        else None
    )
    torch.manual_seed(config.optim.seed)
    # channels_last everywhere: on this 2-core CPU a small_cnn training step ran 1.7x faster, cifar_resnet20 1.2x.
    num_classes = len(data.source.classes)
    weights = None if config.objective.teacher else config.runtime.weights  # else: the online teacher's
    example = None if prep.is_image else stack([data.dataset[int(data.indices[0])][0]] * 2)  # a real sample
    try:
        student = create_student(
            config.model.student, num_classes, *prep.model_geometry, weights, config.runtime.trust_checkpoint
        )
    except ValueError as err:
        if prep.is_image:
            raise
        raise ValueError(
            f"student {config.model.student} cannot take these samples ({err}): it expects images; "
            f"for tensor or dict samples use a FILE.py:FUNC model that takes them, or linear / mlp "
            f"for flat features"
        ) from None
    student = prepare_model(student, device)
    probe_student(student, config.model.student, prep, num_classes, example)
    if rank.distributed:
        student = nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )
    if teacher is not None:
        teacher = Teacher(prepare_model(teacher.model, device).eval(), teacher.normalize.to(device))
    optimizer = make_optimizer(student, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader))
    scaler = torch.amp.GradScaler("cuda", enabled=config.optim.amp and device.type == "cuda")
    return Run(
        config,
        rank,
        device,
        data,
        sampler,
        train_loader,
        eval_loader,
        student,
        Normalize(prep).to(device),
        prep,
        teacher,
        config.make_objective(),
        optimizer,
        scheduler,
        scaler,
        steps_per_epoch=len(train_loader),
    )


def make_optimizer(model: nn.Module, config: FitConfig) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, Nesterov) or AdamW, with the per-optimizer default lr and weight decay."""
    if config.optim.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.peak_lr, momentum=0.9, nesterov=True, weight_decay=config.decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.peak_lr, weight_decay=config.decay)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step `step` of `total` (per-step schedules).

    Linear warmup over `warmup` steps, then cosine to 0, step (x0.1 at 50% and 75%), or constant.
    onecycle rises linearly from peak/25 over `warmup` steps (25% of the run when 0), then anneals
    to ~0 by cosine, like torch's OneCycleLR without its momentum cycling.
    """
    if schedule == "onecycle":
        rise = warmup or max(1, int(ONECYCLE_RISE * total))
        if step < rise:
            return ONECYCLE_START + (1 - ONECYCLE_START) * step / rise
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - rise) / max(1, total - rise))))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


def make_scheduler(optimizer, config: FitConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = config.optim.epochs * steps_per_epoch
    warmup = round(config.optim.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, config.optim.schedule)
    )


# ----------------------------------------------------------------------------- one epoch


def _to_device(batch, device: torch.device, dtype: torch.dtype | None = None):
    images, labels, *rest = batch
    if labels.ndim == 2:  # R views of each decoded sample: (B / R, R, ...) -> (B, ...)
        images, labels, rest = flatten_views(images), labels.flatten(0, 1), [r.flatten(0, 1) for r in rest]
    images = to_device(images, device, dtype)
    targets = rest[0].to(device, non_blocking=True) if rest else None
    return images, labels.to(device, non_blocking=True), targets


def teacher_logits(teacher: Teacher, images: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    """The online teacher's float32 logits on the student's exact batch."""
    with torch.inference_mode(), autocast(device, amp):
        logits = teacher.model(teacher.normalize(images))
    return logits.float().clone()  # an ordinary tensor: inference tensors cannot be saved for backward


def train_step(run: Run, images, labels, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns (loss, student logits), detached."""
    if run.teacher is not None:
        targets = teacher_logits(run.teacher, images, run.device, run.config.optim.amp)
    with autocast(run.device, run.config.optim.amp):
        logits = run.student(run.normalize(images))
    loss = run.objective(logits, targets, labels)
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


def _finite_everywhere(run: Run, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (one sync; the GradScaler syncs every step anyway)."""
    bad = (~torch.isfinite(loss.detach())).to(torch.float32)
    if run.rank.distributed:
        dist.all_reduce(bad)  # every rank stops at the same step, none waits forever in the next all-reduce
    return not bool(bad)


def _stop_agreed(run: Run) -> bool:
    """Whether any process received a stop signal (all of them stop after the same step)."""
    if not run.rank.distributed:
        return run.stop.requested
    signum = torch.tensor([float(run.stop.signal or 0)], device=run.device)
    dist.all_reduce(signum, op=dist.ReduceOp.MAX)
    if signum.item() and not run.stop.requested:
        run.stop.signal = int(signum.item())  # another rank got it: every rank names the same signal
    return bool(signum.item())


class EpochInterrupted(Exception):
    """A stop signal ended an epoch early, after `step` optimizer steps; `totals` are its running sums."""

    def __init__(self, step: int, totals: list[float], seconds: float):
        super().__init__(f"stopped after step {step}")
        self.step, self.totals, self.seconds = step, totals, seconds


def train_one_epoch(run: Run, epoch: int, start_step: int = 0, totals: list[float] | None = None) -> dict:
    """One pass over this process's share of the training set; returns loss, accuracy, images/s.

    `start_step` and `totals` continue an epoch a stop signal interrupted (a mid-epoch checkpoint):
    the sampler skips the batches already done. Raises NonFiniteLoss naming the epoch and step, and
    EpochInterrupted when a stop signal arrived (after finishing the step in progress).
    """
    run.student.train()
    run.sampler.set_epoch(epoch, start=start_step * run.config.optim.batch_size)
    sums = torch.tensor(totals or [0.0, 0.0, 0.0], dtype=torch.float64, device=run.device)  # loss, correct, images
    lr = run.optimizer.param_groups[0]["lr"]
    started = time.perf_counter()
    steps = run.steps_per_epoch or len(run.train_loader)
    bar = progress_bar(
        run.train_loader,
        total=steps,
        initial=start_step,
        desc=f"epoch {epoch + 1}/{run.config.optim.epochs}",
        unit="batch",
        enabled=run.config.runtime.progress and run.rank.is_main,
        leave=False,
    )
    for step, batch in enumerate(bar, start=start_step):
        images, labels, targets = _to_device(batch, run.device, run.input_dtype)
        try:
            loss, logits = train_step(run, images, labels, targets)
        except NonFiniteLoss as err:
            raise NonFiniteLoss(f"{err} at epoch {epoch + 1}, step {step + 1} of {steps}") from None
        if run.log.per_step:
            run.log.step(epoch * steps + step, float(loss), run.optimizer.param_groups[0]["lr"])
        sums += torch.stack(
            [
                loss.double() * len(labels),
                (logits.argmax(1) == labels).sum().double(),
                torch.tensor(float(len(labels)), dtype=torch.float64, device=run.device),
            ]
        )
        if step % 10 == 0 or step == steps - 1:
            _show(bar, sums, started)
        if _stop_agreed(run) and step + 1 < steps:
            bar.close()
            raise EpochInterrupted(step + 1, sums.tolist(), time.perf_counter() - started)
    if run.rank.distributed:
        dist.all_reduce(sums)
    loss_sum, correct, count = sums.tolist()
    bar.close()
    seconds = time.perf_counter() - started
    return {
        "lr": lr,
        "train_loss": loss_sum / max(count, 1),
        "train_accuracy": correct / max(count, 1),
        "seconds": seconds,
        "images_per_second": count / max(seconds, 1e-9),
    }


def _show(bar, totals: torch.Tensor, started: float) -> None:
    if bar.disable:
        return
    loss_sum, correct, count = totals.tolist()
    bar.set_postfix(
        loss=f"{loss_sum / count:.4f}",
        acc=f"{correct / count:.2%}",
        img_s=f"{count / max(time.perf_counter() - started, 1e-9):.0f}",
        refresh=False,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, normalize: nn.Module, loader, device: torch.device, amp: bool = True, show_progress: bool = False
) -> dict:
    """Cross-entropy and top-1 accuracy of `model` over `loader`, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for batch in progress_bar(loader, desc="evaluating", unit="batch", enabled=show_progress, leave=False):
        images, labels, _ = _to_device(batch, device, _input_dtype(model))
        with autocast(device, amp):
            logits = model(normalize(images)).float()
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
        count += len(labels)
    model.train(was_training)
    return {"eval_loss": loss_sum / max(count, 1), "eval_accuracy": correct / max(count, 1)}


# ----------------------------------------------------------------------------- fit


@dataclass
class Progress:
    """The state that survives across epochs and resumes."""

    epoch: int = 0  # epochs finished
    history: list = field(default_factory=list)
    best_accuracy: float | None = None
    best_epoch: int | None = None
    step: int = 0  # optimizer steps done in epoch `epoch` (a mid-epoch checkpoint after a stop signal)
    totals: list | None = None  # that epoch's running sums (loss, correct, images)
    seconds: float = 0.0  # and the seconds it had run


def fit(config: FitConfig) -> dict:
    """Train one student as `config` says.

    Args:
        config: the run (`FitConfig.from_options(cache=..., student=..., out=...)`).
    Returns:
        The summary also written to OUT/summary.json (test accuracy, best epoch, timings, config).
    Raises:
        ValueError / FileNotFoundError / FileExistsError: bad options, a cache that does not match
            its images, an --out that holds another run; raised before the first epoch.
    """
    from trainer.classic import fit_classic, is_classic

    if is_classic(config.model.student):
        return fit_classic(config)
    check_config(config)
    rank = current_rank()
    device = _device_for(config, rank)
    out = Path(config.runtime.out)
    created = rank.is_main and not out.exists()
    try:
        with cpu_threads(device, config.runtime.workers, config.runtime.threads), _process_group(rank, device):
            return _fit(config, rank, device, out)
    except BaseException:
        if created:
            _remove_if_empty(out)  # a run refused before it wrote anything leaves no folder behind
        raise


def _fit(config: FitConfig, rank: Rank, device: torch.device, out: Path) -> dict:
    _check_out(config, out, rank)
    with stop_on_signals(config.runtime.stop_signals) as stop:
        run = build_run(config, rank, device)
        if rank.is_main:
            warn_if_views_run_out(config, run.data.cache)
        run.stop = stop
        progress = _restore(run, out) if config.runtime.resume and (out / "last.pt").exists() else Progress()
        if rank.is_main:
            run.log = RunLog(config.runtime.log, out, progress.epoch * run.steps_per_epoch + progress.step)
        started = time.perf_counter()
        last = min(config.optim.epochs, config.runtime.stop_after or config.optim.epochs)
        try:
            for epoch in range(progress.epoch, last):
                _stop_between_epochs(run, progress, out)
                _run_epoch(run, progress, epoch, out)
        except Stopped:
            if rank.is_main:  # launchers such as torchrun report their own exit status: the summary says it too
                stopped = {**make_summary(run, progress, None), "stopped_by": run.stop.name, "step": progress.step}
                checkpoints.write_json_atomic(stopped, out / "summary.json")
            raise
        finally:
            run.log.close()
            close_loader(run.train_loader)  # persistent workers end with the run, also when it fails
            close_loader(run.eval_loader)
    summary = make_summary(run, progress, time.perf_counter() - started)
    if rank.is_main:
        checkpoints.write_json_atomic(summary, out / "summary.json")
    return summary


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (the run wrote files), or already gone
        pass


def _device_for(config: FitConfig, rank: Rank) -> torch.device:
    if rank.distributed and config.runtime.device == "auto" and torch.cuda.is_available():
        return resolve_device(f"cuda:{rank.local_rank}")
    device = resolve_device(config.runtime.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def _process_group(rank: Rank, device: torch.device):
    if not rank.distributed or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=60))
    try:
        yield
    finally:
        dist.destroy_process_group()


def _check_out(config: FitConfig, out: Path, rank: Rank) -> None:
    if (out / "last.pt").exists() and not (config.runtime.resume or config.runtime.overwrite):
        raise FileExistsError(
            f"{out} already holds a run (last.pt): pass --resume to continue it, "
            f"--overwrite to start again, or choose another --out"
        )
    if rank.is_main:
        out.mkdir(parents=True, exist_ok=True)


def _stop_between_epochs(run: Run, progress: Progress, out: Path) -> None:
    """A stop signal that arrived during setup, evaluation or the last checkpoint: everything is saved."""
    if _stop_agreed(run):
        saved = f"{out / 'last.pt'} holds epoch {progress.epoch}" if progress.epoch else "nothing to save yet"
        raise Stopped(f"stopped by {run.stop.name} before epoch {progress.epoch + 1}: {saved}; {RESUME_HINT}")


RESUME_HINT = "run the same command with --resume to continue"


def _run_epoch(run: Run, progress: Progress, epoch: int, out: Path) -> None:
    try:
        stats = train_one_epoch(run, epoch, progress.step, progress.totals)
    except NonFiniteLoss as err:
        kept = (
            f"{out / 'last.pt'} (epoch {progress.epoch}{f', step {progress.step}' if progress.step else ''}) is intact"
            if (out / "last.pt").exists()
            else "no checkpoint was written yet"
        )
        raise NonFiniteLoss(
            f"{err}: the run stopped before that step changed the weights; {kept}. Lower --lr or --temperature, keep "
            f"--clip-grad-norm on, or check the data; --resume continues from the checkpoint"
        ) from None
    except EpochInterrupted as stop:
        _save_mid_epoch(run, progress, stop, out)
        raise Stopped(
            f"stopped by {run.stop.name} at epoch {epoch + 1}, step {stop.step} of {run.steps_per_epoch}: "
            f"saved {out / 'last.pt'}; {RESUME_HINT}"
        ) from None
    stats["seconds"] += progress.seconds
    progress.step, progress.totals, progress.seconds = 0, None, 0.0
    record = {"epoch": epoch + 1, **stats}
    if run.eval_loader is not None:
        started = time.perf_counter()
        record.update(
            evaluate(
                run.bare_student,
                run.normalize,
                run.eval_loader,
                run.device,
                run.config.optim.amp,
                show_progress=run.config.runtime.progress,
            )
        )
        record["eval_seconds"] = time.perf_counter() - started
    _report(run, record)
    run.log.epoch(record)
    progress.epoch = epoch + 1
    progress.history.append(record)
    improved = _note_best(progress, record)
    if run.rank.is_main:
        save_outputs(run, progress, out, improved)
    if run.rank.distributed:
        dist.barrier()


def _save_mid_epoch(run: Run, progress: Progress, stop: EpochInterrupted, out: Path) -> None:
    """last.pt at the current step: what `--resume` needs to continue the epoch exactly."""
    progress.step, progress.totals, progress.seconds = stop.step, stop.totals, progress.seconds + stop.seconds
    if run.rank.is_main:
        checkpoints.save_checkpoint(checkpoint_state(run, progress, resumable=True), out / "last.pt")
    if run.rank.distributed:
        dist.barrier()


def _report(run: Run, record: dict) -> None:
    """One line per epoch under its progress bar."""
    if not (run.config.runtime.progress and run.rank.is_main):
        return
    held_out = (
        f", eval loss {record['eval_loss']:.4f} acc {record['eval_accuracy']:.2%}" if "eval_accuracy" in record else ""
    )
    tqdm.write(
        f"epoch {record['epoch']}/{run.config.optim.epochs}: train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.2%}{held_out}, {record['images_per_second']:.0f} images/s"
    )


def _note_best(progress: Progress, record: dict) -> bool:
    """True when this epoch's weights become best.pt: best eval accuracy, or the latest without evaluation."""
    accuracy = record.get("eval_accuracy")
    if accuracy is None:
        return True
    if progress.best_accuracy is None or accuracy > progress.best_accuracy:
        progress.best_accuracy, progress.best_epoch = accuracy, record["epoch"]
        return True
    return False


def checkpoint_state(run: Run, progress: Progress, resumable: bool) -> dict:
    state = {
        "model": {k: v.detach().cpu() for k, v in run.bare_student.state_dict().items()},
        "config": run.config.to_dict(),
        "identity": run.data.identity,
        "cache_fingerprint": run.data.cache.fingerprint if run.data.cache else None,
        "preprocessing": run.student_prep.to_dict(),
        "classes": list(run.data.source.classes),
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
        if progress.step:  # stopped mid-epoch by a signal
            state.update(step=progress.step, epoch_totals=progress.totals, epoch_seconds=progress.seconds)
    return state


def save_outputs(run: Run, progress: Progress, out: Path, improved: bool) -> None:
    """After each epoch: last.pt (and best.pt), metrics.jsonl/.csv, curves.png, summary.json."""
    checkpoints.save_checkpoint(checkpoint_state(run, progress, resumable=True), out / "last.pt")
    if improved:
        best = checkpoint_state(run, progress, resumable=False)
        checkpoints.save_checkpoint(best, out / "best.pt")
        checkpoints.save_weights(best, run.config.model.student, out / "best")
    write_metrics(progress.history, out)
    plots.plot_curves(progress.history, out / "curves.png", title=_title(run.config))
    checkpoints.write_json_atomic(make_summary(run, progress, None), out / "summary.json")


def write_metrics(history: list[dict], out: Path) -> None:
    import json

    checkpoints.write_text_atomic("".join(json.dumps(r, sort_keys=True) + "\n" for r in history), out / "metrics.jsonl")
    rows = [",".join(METRIC_FIELDS)]
    rows += [",".join("" if r.get(k) is None else f"{r[k]:.6g}" for k in METRIC_FIELDS) for r in history]
    checkpoints.write_text_atomic("\n".join(rows) + "\n", out / "metrics.csv")


def _title(config: FitConfig) -> str:
    loss = config.loss_name
    detail = f" T={config.objective.temperature:g} alpha={config.objective.alpha:g}" if loss == "kd" else ""
    return f"{config.model.student}, {loss}{detail}"


def _restore(run: Run, out: Path) -> Progress:
    """Load last.pt into the run (weights, optimizer, schedule, scaler, RNG) after checking it fits."""
    path = out / "last.pt"
    state = checkpoints.load_checkpoint(path)
    checkpoints.check_resumable(state, run.config.identity(), run.data.identity, path)
    run.bare_student.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    checkpoints.set_rng_state(state["rng"])
    return Progress(
        int(state["epoch"]),
        list(state["history"]),
        state["best_accuracy"],
        state.get("best_epoch"),
        step=int(state.get("step", 0)),
        totals=state.get("epoch_totals"),
        seconds=float(state.get("epoch_seconds", 0.0)),
    )


def peak_memory(device: torch.device) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    memory = {"peak_rss_mb": round(usage / 2**20, 1)}
    if device.type == "cuda":
        memory["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return memory


def view_uses(config: FitConfig, cache: store.CacheInfo | None) -> float | None:
    """How many times the run shows each stored view of a cache (epochs x views per decode / V)."""
    if cache is None:
        return None
    return config.optim.epochs * config.data.views_per_decode / cache.layout.num_views


def warn_if_views_run_out(config: FitConfig, cache: store.CacheInfo | None) -> None:
    """The trap of long schedules on few stored views without augmentation (SAFE_VIEW_USES)."""
    uses = view_uses(config, cache)
    if cache is None or uses is None or uses <= SAFE_VIEW_USES or config.data.augment != "none":
        return
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


def make_summary(run: Run, progress: Progress, run_seconds: float | None) -> dict:
    history = progress.history
    train_seconds = sum(r["seconds"] for r in history)
    images = sum(r["seconds"] * r["images_per_second"] for r in history)
    last = history[-1] if history else {}
    summary = {
        "config": run.config.to_dict(),
        "student": run.config.model.student,
        "loss": run.config.loss_name,
        "epochs": progress.epoch,
        "finished": progress.epoch >= run.config.optim.epochs,
        "test_accuracy": last.get("eval_accuracy"),
        "best_accuracy": progress.best_accuracy,
        "best_epoch": progress.best_epoch,
        "train_accuracy": last.get("train_accuracy"),
        "train_loss": last.get("train_loss"),
        "wall_seconds": round(train_seconds + sum(r.get("eval_seconds", 0.0) for r in history), 3),
        "images_per_second": round(images / train_seconds, 1) if train_seconds else None,
        "num_params": sum(p.numel() for p in run.bare_student.parameters()),
        "device": str(run.device),
        "world_size": run.rank.world_size,
        "cache_fingerprint": run.data.cache.fingerprint if run.data.cache else None,
        "teacher_accuracy": run.data.cache.attrs.get("teacher_accuracy") if run.data.cache else None,
        "view_uses": view_uses(run.config, run.data.cache),  # times each stored view is seen, in the whole run
        **peak_memory(run.device),
    }
    if run_seconds is not None:
        summary["run_seconds"] = round(run_seconds, 3)
    return summary
