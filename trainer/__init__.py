"""trainer: train students from a softlabels cache (stage 2), from labels, or from a teacher online.

from trainer import FitConfig, fit, kd_loss
summary = fit(FitConfig(cache="data/cache.h5", student="small_cnn", out="runs/kd"))
"""

from softlabels.checks import compare_samples
from softlabels.replay import EpochSampler, ReplayDataset, ViewSchedule
from trainer.config import FitConfig
from trainer.data import CachedDataset, LabelledDataset
from trainer.engine import Hook, evaluate, train_one_epoch
from trainer.loop import fit
from trainer.losses import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, Objective, hard_loss, kd_loss
from trainer.students import create_student, list_students
from trainer.sweep import SweepConfig, sweep

__all__ = [
    "CachedDataset",
    "ReplayDataset",
    "EpochSampler",
    "LabelledDataset",
    "ViewSchedule",
    "compare_samples",
    "FitConfig",
    "Hook",
    "evaluate",
    "fit",
    "train_one_epoch",
    "DEFAULT_ALPHA",
    "DEFAULT_TEMPERATURE",
    "Objective",
    "hard_loss",
    "kd_loss",
    "create_student",
    "list_students",
    "SweepConfig",
    "sweep",
]
