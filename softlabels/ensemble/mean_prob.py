"""`mean-prob`: the average of the teachers' softmax at the distillation temperature T (Apple's dataset
reinforcement), the default."""

from __future__ import annotations

import numpy as np

from softlabels.ensemble.base import Rule, mean_probabilities


class MeanProb(Rule):
    name = "mean-prob"
    form = "mean-prob"

    def combine(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        count = logits.shape[-2]
        return mean_probabilities(logits, np.full(count, 1.0 / count), temperature)
