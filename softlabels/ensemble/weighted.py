"""`0.7,0.3`: a weighted average of the teachers' probabilities at T (weights normalised to sum 1)."""

from __future__ import annotations

import math

import numpy as np

from softlabels.ensemble.base import Rule, mean_probabilities


class Weighted(Rule):
    name = "weights"
    form = "weights such as 0.7,0.3"

    def __init__(self, weights: tuple[float, ...]):
        self.weights = weights

    @classmethod
    def claims(cls, text: str) -> bool:
        return "," in text or _number(text)

    @classmethod
    def parse(cls, text: str, names: list[str]) -> Rule:
        parts = [part.strip() for part in text.split(",")]
        if not all(_number(part) for part in parts):
            raise ValueError(f"--ensemble {text}: weights must be numbers, one per teacher ({', '.join(names)})")
        weights = tuple(float(part) for part in parts)
        if len(weights) != len(names) or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"--ensemble {text}: give {len(names)} finite, non-negative weights, not all zero, one per "
                f"teacher ({', '.join(names)})"
            )
        return cls(tuple(w / sum(weights) for w in weights))

    def combine(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        return mean_probabilities(logits, np.asarray(self.weights), temperature)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
