"""Mixing the teachers of a several-teacher cache into one target, at train time.

A cache built with several `--teacher`s (or joined with `softlabels merge --teachers`) stores each
teacher's outputs on the same views: (..., M, C). The student's target is chosen when it trains:

- `mean-prob`: the average of the teachers' softmax at the distillation temperature T (Apple's
  dataset reinforcement); returned as logits `T * log(mean_m softmax(z_m / T))`, whose softmax at T
  is that average;
- `mean-logit`: the average logit;
- `0.7,0.3`: a weighted average of the teachers' probabilities at T (weights normalised to sum 1);
- `teacher:NAME` or `teacher:INDEX`: one member alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KINDS = ("mean-prob", "mean-logit", "weights", "teacher")


@dataclass(frozen=True)
class Ensemble:
    kind: str = "mean-prob"
    weights: tuple[float, ...] | None = None
    member: int | None = None
    temperature: float = 1.0

    @classmethod
    def parse(cls, text: str | None, names: list[str], temperature: float = 1.0) -> Ensemble:
        """`mean-prob`, `mean-logit`, `W1,W2,...` or `teacher:NAME|INDEX` for a cache whose members are `names`."""
        text = (text or "mean-prob").strip()
        if text in ("mean-prob", "mean-logit"):
            return cls(text, temperature=temperature)
        if text.startswith("teacher:"):
            return cls("teacher", member=_member(text[len("teacher:") :], names), temperature=temperature)
        weights = parse_weights(text, names)
        return cls("weights", weights=tuple(w / sum(weights) for w in weights), temperature=temperature)

    def combine(self, logits: np.ndarray) -> np.ndarray:
        """(..., M, C) float32 teacher logits -> (..., C) target logits."""
        if self.kind == "teacher":
            return logits[..., self.member, :]
        if self.kind == "mean-logit":
            return logits.mean(axis=-2)
        count = logits.shape[-2]
        weights = np.asarray(self.weights or (1.0 / count,) * count, dtype=np.float32)
        t = np.float32(self.temperature)
        scaled = logits / t
        scaled = scaled - scaled.max(axis=-1, keepdims=True)
        probs = np.exp(scaled)
        probs /= probs.sum(axis=-1, keepdims=True)
        mixed = np.einsum("...mc,m->...c", probs, weights)
        return (t * np.log(np.clip(mixed, 1e-30, None))).astype(np.float32)


def check_form(text: str | None) -> None:
    """Refuse an `--ensemble` that no cache could take (e.g. weights `nan,1`), before any data is read."""
    text = (text or "mean-prob").strip()
    if text not in ("mean-prob", "mean-logit") and not text.startswith("teacher:"):
        parse_weights(text, None)


def parse_weights(text: str, names: list[str] | None) -> tuple[float, ...]:
    """The weights of `W1,W2,...`: finite, non-negative, not all zero, one per member of `names` when known."""
    members = f" (members: {', '.join(names)})" if names else ""
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        raise ValueError(
            f"unknown --ensemble {text!r}; use mean-prob, mean-logit, weights such as 0.7,0.3, "
            f"or teacher:NAME|INDEX{members}"
        ) from None
    bad = next((w for w in weights if not math.isfinite(w) or w < 0), None)
    if bad is not None or not 0 < sum(weights) < math.inf:  # float() reads nan, inf and 1e400 (inf)
        value = f"weight {bad}" if bad is not None else f"weights summing to {sum(weights)}"
        raise ValueError(
            f"--ensemble {text}: {value}; weights must be finite, non-negative and not all zero, "
            f"such as 0.7,0.3{members}"
        )
    if names is not None and len(weights) != len(names):
        raise ValueError(
            f"--ensemble {text}: give {len(names)} non-negative weights, one per teacher ({', '.join(names)})"
        )
    return weights


def _member(text: str, names: list[str]) -> int:
    if text.isdigit() and int(text) < len(names):
        return int(text)
    if text in names:
        return names.index(text)
    raise ValueError(
        f"--ensemble teacher:{text}: no such teacher; members: {', '.join(f'{i}: {n}' for i, n in enumerate(names))}"
    )
