"""Optimisation: the optimizer (SGD or AdamW) and the per-step learning-rate schedule of a run."""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.config import ONECYCLE_RISE, ONECYCLE_START, FitConfig


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
