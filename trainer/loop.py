"""`fit`: one training run from a `FitConfig`, the public entry point of the trainer.

It picks the kind of student (a scikit-learn estimator goes to `trainer.classic`), then for a torch
student: the process group under torchrun, the device, the output folder, the stop signals, the set-up
(`trainer.setup`), a resume (`trainer.resume`), and the engine's epochs (`trainer.engine`) with the
run's outputs as hooks (`trainer.outputs`).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from softlabels.runtime import Rank, cpu_threads, current_rank, resolve_device
from softlabels.stopping import stop_on_signals
from trainer import engine
from trainer.classic import fit_classic, is_classic
from trainer.config import FitConfig, check_config, warn_untrained_classifier
from trainer.engine import Hook
from trainer.outputs import output_hooks
from trainer.resume import LAST, Progress, restore
from trainer.setup import build_run


def fit(config: FitConfig, hooks: Sequence[Hook] = ()) -> dict:
    """Train one student as `config` says.

    Args:
        config: the run (`FitConfig.from_options(cache=..., student=..., out=...)`).
        hooks: more `trainer.engine.Hook`s, called after the run's own outputs, on every process.
    Returns:
        The summary also written to OUT/summary.json (test accuracy, best epoch, timings, config).
    Raises:
        ValueError / FileNotFoundError / FileExistsError: bad options, a cache that does not match
            its images, an --out that holds another run; raised before the first epoch.
    """
    if is_classic(config.model.student):
        return fit_classic(config)
    check_config(config)
    rank = current_rank()
    device = device_for(config, rank)
    out = Path(config.runtime.out)
    created = rank.is_main and not out.exists()
    try:
        runtime = config.runtime
        with cpu_threads(device, runtime.workers, runtime.threads, hold=True), process_group(rank, device):
            return _fit(config, rank, device, out, hooks)
    except BaseException:
        if created:
            _remove_if_empty(out)  # a run refused before it wrote anything leaves no folder behind
        raise


def _fit(config: FitConfig, rank: Rank, device: torch.device, out: Path, hooks: Sequence[Hook]) -> dict:
    check_out(config, out, rank)
    with hold_out(out, rank), stop_on_signals(config.runtime.stop_signals) as stop:
        run = build_run(config, rank, device, stop)
        try:
            progress = restore(run, out) if config.runtime.resume and (out / LAST).exists() else Progress()
            warn_untrained_classifier(config)
        except BaseException:
            run.close()
            raise
        return engine.train(run, progress, [*(output_hooks() if rank.is_main else []), *hooks])


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (the run wrote files), or already gone
        pass


def device_for(config: FitConfig, rank: Rank) -> torch.device:
    if rank.distributed and config.runtime.device == "auto" and torch.cuda.is_available():
        return resolve_device(f"cuda:{rank.local_rank}")
    device = resolve_device(config.runtime.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@contextlib.contextmanager
def process_group(rank: Rank, device: torch.device):
    if not rank.distributed or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=60))
    try:
        yield
    finally:
        dist.destroy_process_group()


LEADERBOARD = "leaderboard.md"  # what marks a sweep's folder (`trainer.sweep` writes it)


def check_out(config: FitConfig, out: Path, rank: Rank) -> None:
    if (out / LEADERBOARD).exists():
        raise FileExistsError(
            f"{out} holds a sweep ({LEADERBOARD}; its runs are its sub-folders): choose another --out for this run"
        )
    if (out / LAST).exists() and not (config.runtime.resume or config.runtime.overwrite):
        raise FileExistsError(
            f"{out} already holds a run (last.pt): pass --resume to continue it, "
            f"--overwrite to start again, or choose another --out"
        )
    if rank.is_main:
        out.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def hold_out(out: Path, rank: Rank):
    """Hold --out while this process writes there: a second `trainer fit` or `sweep` writing the same
    folder at once (their checkpoints and summaries would interleave) is refused in one line. The lock
    is the folder's flock, released when the run ends or its process dies (kill -9 included)."""
    if not rank.is_main:
        yield
        return
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileExistsError(
                f"{out} is being written by another trainer (a fit or sweep with the same --out): "
                f"wait for it to finish, or choose another --out"
            ) from None
        except OSError:
            pass  # no locks on this file system (NFS): go on without, as the build does
        yield
    finally:
        os.close(fd)
