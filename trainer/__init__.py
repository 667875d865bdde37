"""trainer: train students from a softlabels cache (stage 2), from labels, or from a teacher online.

from trainer import FitConfig, fit, kd_loss
summary = fit(FitConfig.from_options(cache="data/cache.h5", student="small_cnn", out="runs/kd"))

Names are imported on first use, so `import trainer` (and `trainer --help`) stays fast: no torch
until you train.
"""

from __future__ import annotations

import sys
import types

from softlabels.lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "CachedDataset": "trainer.data",
    "ReplayDataset": "softlabels.replay",
    "EpochSampler": "softlabels.replay",
    "LabelledDataset": "trainer.data",
    "ViewSchedule": "softlabels.replay",
    "compare_samples": "softlabels.audit",
    "FitConfig": "trainer.config",
    "Hook": "trainer.engine",
    "evaluate": "trainer.engine",
    "fit": "trainer.loop",
    "train_one_epoch": "trainer.engine",
    "DEFAULT_ALPHA": "trainer.losses",
    "DEFAULT_TEMPERATURE": "trainer.losses",
    "Objective": "trainer.losses",
    "hard_loss": "trainer.losses",
    "kd_loss": "trainer.losses",
    "create_student": "trainer.students",
    "list_students": "trainer.students",
    "SweepConfig": "trainer.sweep",
    "sweep": "trainer.sweep",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


class _Package(types.ModuleType):
    """`trainer.sweep` is the function, as `from trainer import sweep` has always given: importing the
    module `trainer.sweep` (which binds the package's attribute to the module) binds its function."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
