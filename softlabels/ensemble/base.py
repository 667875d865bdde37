"""What every ensemble rule provides: how `--ensemble` spells it, and how it mixes the teachers.

A rule turns the (..., M, C) float32 logits of a several-teacher cache's M members into one (..., C)
target, returned as logits whose softmax at the distillation temperature is the mixed target. One
subclass per rule, in its own module, registered once in `softlabels.ensemble.RULES`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class Rule:
    """One way to mix the teachers; `parse` reads its `--ensemble` text for a cache whose members are `names`."""

    name: ClassVar[str] = ""
    form: ClassVar[str] = ""  # how --ensemble spells it, for help texts and errors

    @classmethod
    def claims(cls, text: str) -> bool:
        return text == cls.name

    @classmethod
    def parse(cls, text: str, names: list[str]) -> Rule:
        return cls()

    @classmethod
    def check_form(cls, text: str) -> None:
        """Refuse what no cache could take, before the cache's members are known (nothing by default)."""

    def combine(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        """(..., M, C) float32 teacher logits -> (..., C) target logits."""
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def mean_probabilities(logits: np.ndarray, weights: np.ndarray, temperature: float) -> np.ndarray:
    """`T * log(sum_m w_m softmax(z_m / T))`: logits whose softmax at T is the weighted mean of the members'."""
    t = np.float32(temperature)
    scaled = logits / t
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=-1, keepdims=True)
    mixed = np.einsum("...mc,m->...c", probs, weights.astype(np.float32))
    return (t * np.log(np.clip(mixed, 1e-30, None))).astype(np.float32)
