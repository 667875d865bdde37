"""Sums of losses: `--loss kd+embed-cosine` trains on the sum of its parts, each with the run's settings.

`combine(parts)` makes the `Loss` class of a `+`-joined name; it needs what any part needs, has a
projection when a part has one, keeps a label term when a part keeps one, and trains the classifier
when a part does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from trainer.losses.base import Loss


@dataclass(frozen=True)
class Composite(Loss):
    parts: ClassVar[tuple[type[Loss], ...]] = ()
    members: tuple[Loss, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        super().__post_init__()
        members = tuple(part(self.temperature, self.alpha, self.label_smoothing) for part in self.parts)
        object.__setattr__(self, "members", members)

    @property
    def label_term(self) -> str | None:
        return next((m.label_term for m in self.members if m.label_term), None)

    def check_finite(self) -> None:
        for member in self.members:
            member.check_finite()

    def check_batch_size(self, batch_size: int) -> None:
        for member in self.members:
            member.check_batch_size(batch_size)

    def __call__(self, student_logits, teacher_logits, labels, embeddings=None):
        total = None
        for member in self.members:
            extra = (embeddings,) if member.needs_embedding else ()  # losses from logits may take three arguments
            loss = member(student_logits, teacher_logits, labels, *extra)
            total = loss if total is None else total + loss
        assert total is not None
        return total

    def class_weights(self, labels, teacher_logits, num_classes) -> np.ndarray:
        raise ValueError(f"--loss {self.name} is a sum of losses: a scikit-learn student takes one loss's weights")


def combine(parts: list[type[Loss]]) -> type[Loss]:
    """The Loss class of the sum of `parts` (at least two, no repeats)."""
    names = [p.name for p in parts]
    if len(set(names)) != len(names) or len(parts) < 2:
        raise ValueError(f"--loss {'+'.join(names)}: join two or more different losses with +")
    return type(
        "Composite",
        (Composite,),
        {
            "parts": tuple(parts),
            "name": "+".join(names),
            "description": " + ".join(p.description for p in parts),
            "needs_teacher": any(p.needs_teacher for p in parts),
            "needs": frozenset().union(*(p.needs for p in parts)),
            "projection": any(p.projection for p in parts),
            "trains_classifier": any(p.trains_classifier for p in parts),
            "settings": tuple(dict.fromkeys(s for p in parts for s in p.settings)),
        },
    )
