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
    def check_form(cls, text: str) -> None:
        cls.weights_of(text)

    @classmethod
    def weights_of(cls, text: str, names: list[str] | None = None) -> tuple[float, ...]:
        """The weights of `W1,W2,...`: finite, non-negative, not all zero, one per member of `names` when known."""
        members = f" ({', '.join(names)})" if names else ""
        parts = [part.strip() for part in text.split(",")]
        if not all(_number(part) for part in parts):
            raise ValueError(f"--ensemble {text}: weights must be numbers, one per teacher{members}")
        weights = tuple(float(part) for part in parts)
        # float() reads nan, inf and 1e400 (inf): none can weigh a teacher
        bad = next((w for w in weights if not math.isfinite(w) or w < 0), None)
        if bad is not None or not 0 < sum(weights) < math.inf:
            value = f"weight {bad}" if bad is not None else f"weights summing to {sum(weights)}"
            raise ValueError(
                f"--ensemble {text}: {value}; weights must be finite, non-negative and not all zero, "
                f"such as 0.7,0.3{members}"
            )
        if names is not None and len(weights) != len(names):
            raise ValueError(f"--ensemble {text}: give {len(names)} weights, one per teacher{members}")
        return weights

    @classmethod
    def parse(cls, text: str, names: list[str]) -> Rule:
        weights = cls.weights_of(text, names)
        return cls(tuple(w / sum(weights) for w in weights))

    def combine(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        return mean_probabilities(logits, np.asarray(self.weights), temperature)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
