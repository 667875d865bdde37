"""`sklearn:NAME`: scikit-learn students (`trainer.classic`). They are fitted, not built as torch
modules, and take their input as given (the data's, or the cache's views)."""

from __future__ import annotations

from softlabels.models.base import ModelSource

PREFIX = "sklearn:"


class SklearnSource(ModelSource):
    name = "sklearn"
    form = "sklearn:logistic|linear_svm (students)"
    trainable = False

    def claims(self, spec):
        return spec.startswith(PREFIX)

    def create(self, spec, num_classes, in_channels, image_size):
        raise ValueError(
            f"{spec} is a scikit-learn student: `trainer fit --student {spec}` fits it; it is not a "
            f"torch module (and cannot be a teacher)"
        )
