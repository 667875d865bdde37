"""`mean-logit`: the average of the teachers' logits."""

from __future__ import annotations

import numpy as np

from softlabels.ensemble.base import Rule


class MeanLogit(Rule):
    name = "mean-logit"
    form = "mean-logit"

    def combine(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        return logits.mean(axis=-2)
