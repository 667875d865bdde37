"""Where code runs: device choice, mixed precision, CPU threads, and "which rank am I"."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from softlabels import threads as threads_module


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; `cuda[:i]` must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:INDEX") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:INDEX")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return device


def amp_active(device: torch.device, enabled: bool) -> bool:
    """Whether `--amp` takes effect: fp16 autocast on CUDA only (on CPUs without AMX, bf16 autocast is
    many times slower)."""
    return enabled and device.type == "cuda"


def autocast(device: torch.device, enabled: bool):
    """fp16 autocast where `amp_active`, else nothing."""
    if amp_active(device, enabled):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to the device in channels_last (faster convolutions on CUDA and on x86 CPUs)."""
    return model.to(device).to(memory_format=torch.channels_last)


@contextlib.contextmanager
def cpu_threads(device: torch.device, workers: int, threads: int | None = None, hold: bool = False):
    """Intra-op threads on CPU: `threads`, else the idle cores, measured (`softlabels.threads`); with
    `hold` (training) the measured count is held after the governor's second decision.

    Oversubscription is brutal on small machines (2 threads beside a busy process ran 4-9x slower
    than 1), so the default starts from the cores the loader workers leave free; from the first
    batch on it follows the cores other processes leave, less the workers' when the loop waits for
    them (the loop iterates its batches through `softlabels.threads.paced`).
    """
    before = torch.get_num_threads()
    if device.type != "cpu":
        yield
        return
    governor = threads_module.ThreadGovernor(
        threads or max(1, min(before, (os.cpu_count() or 1) - workers)),
        explicit=threads is not None,
        limit=before,
        hold=hold,
    )
    threads_module._active.append(governor)
    try:
        yield
    finally:
        threads_module._active.remove(governor)
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Rank:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_rank() -> Rank:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    env = os.environ
    return Rank(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def end_workers(iterator) -> None:
    """Stop a DataLoader iterator's worker processes now rather than when it is garbage-collected: an
    exception's traceback can keep it alive for as long as the process lives, and its forked workers
    keep the files they inherited open (a build's partial cache, still locked)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
