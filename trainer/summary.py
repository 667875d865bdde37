"""A run's summary (summary.json, and what `trainer.fit` returns): accuracies, timings, memory, config."""

from __future__ import annotations

import resource
from collections.abc import Sequence
from typing import cast

import torch

from softlabels import store
from trainer.config import FitConfig
from trainer.data import LabelledDataset, held_out_name
from trainer.resume import Progress
from trainer.setup import Run


def make_summary(run: Run, progress: Progress, run_seconds: float | None) -> dict:
    history = progress.history
    train_seconds = sum(r["seconds"] for r in history)
    images = sum(r["seconds"] * r["images_per_second"] for r in history)
    last = history[-1] if history else {}
    fingerprints = [cache.fingerprint for cache in run.data.caches]  # several caches: each one's
    summary = {
        "config": run.config.to_dict(),
        "student": run.config.model.student,
        "loss": run.config.loss_name,
        "epochs": progress.epoch,
        "finished": progress.epoch >= run.config.optim.epochs,
        "test_accuracy": last.get("eval_accuracy"),
        "eval_set": None if run.eval_loader is None else held_out_name(cast(LabelledDataset, run.eval_loader.dataset)),
        "best_accuracy": progress.best_accuracy,
        "best_epoch": progress.best_epoch,
        "train_accuracy": last.get("train_accuracy"),
        **{name: value for name, value in last.items() if name.startswith("probe_")},  # --probe
        "train_loss": last.get("train_loss"),
        "wall_seconds": round(train_seconds + sum(r.get("eval_seconds", 0.0) for r in history), 3),
        "images_per_second": round(images / train_seconds, 1) if train_seconds else None,
        "num_params": sum(p.numel() for p in run.bare_student.parameters()),
        "device": str(run.device),
        "world_size": run.rank.world_size,
        "cache_fingerprint": fingerprints[0] if len(fingerprints) == 1 else (fingerprints or None),
        "teacher_accuracy": run.data.cache.attrs.get("teacher_accuracy") if run.data.cache else None,
        "view_uses": view_uses(run.config, run.data.caches),  # times each stored view is seen, in the whole run
        **peak_memory(run.device),
    }
    if run_seconds is not None:
        summary["run_seconds"] = round(run_seconds, 3)
    return summary


def peak_memory(device: torch.device) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    memory = {"peak_rss_mb": round(usage / 2**20, 1)}
    if device.type == "cuda":
        memory["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return memory


def view_uses(config: FitConfig, caches: Sequence[store.CacheInfo]) -> float | None:
    """How many times the run shows each stored view of its caches (epochs x views per decode / V; with
    several caches, of the one with the fewest views)."""
    if not caches:
        return None
    return config.optim.epochs * config.data.views_per_decode / min(c.layout.num_views for c in caches)
