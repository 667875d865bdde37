"""Training objectives: one module per loss, registered once in `LOSSES` (name -> class).

A new loss is a new module with a `Loss` subclass (see `base.py` for what it declares) and one line
in `LOSSES`; the command line, the config checks, the sweep and the scikit-learn path find it there.
`Objective` is a loss chosen by name with its settings, as a run's config makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.losses.base import Embeddings, Loss, check_kd_settings
from trainer.losses.ce import CrossEntropy
from trainer.losses.composite import combine
from trainer.losses.embed_cosine import EmbedCosine, EmbedCosineL1
from trainer.losses.hard import HardTargets, hard_loss
from trainer.losses.kd import DEFAULT_ALPHA, DEFAULT_TEMPERATURE, Distillation, kd_loss
from trainer.losses.relational import Relational

LOSSES: dict[str, type[Loss]] = {
    Distillation.name: Distillation,
    HardTargets.name: HardTargets,
    CrossEntropy.name: CrossEntropy,
    EmbedCosine.name: EmbedCosine,
    EmbedCosineL1.name: EmbedCosineL1,
    Relational.name: Relational,
}

# What a run learns from when --loss is not given: the teacher's outputs where there are any.
DEFAULT_WITH_TEACHER = Distillation.name
DEFAULT_WITHOUT_TEACHER = CrossEntropy.name


def default_loss(has_teacher: bool) -> str:
    """The loss a run uses when none is named: with a cache or an online teacher, or from labels alone."""
    return DEFAULT_WITH_TEACHER if has_teacher else DEFAULT_WITHOUT_TEACHER


def get_loss(name: str) -> type[Loss]:
    """The loss class of a name in LOSSES, or of a sum of them joined by `+` (`kd+embed-cosine`)."""
    if "+" in name:
        return combine([get_loss(part) for part in name.split("+")])
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)} (or a sum: kd+embed-cosine)"
        ) from None


def teacher_losses() -> list[str]:
    """The names of the losses that learn from teacher outputs."""
    return [name for name, loss in LOSSES.items() if loss.needs_teacher]


def describe_losses() -> str:
    """One line per loss, `name: description`, for help texts."""
    return "\n".join(f"{name}: {loss.description}" for name, loss in LOSSES.items())


@dataclass(frozen=True)
class Objective:
    """One of `LOSSES` by name with its settings, called as objective(student_logits, teacher_logits, labels)."""

    name: str = DEFAULT_WITHOUT_TEACHER
    temperature: float = DEFAULT_TEMPERATURE
    alpha: float = DEFAULT_ALPHA
    label_smoothing: float = 0.0
    loss: Loss = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        loss = get_loss(self.name)(self.temperature, self.alpha, self.label_smoothing)
        object.__setattr__(self, "loss", loss)

    @property
    def needs_teacher(self) -> bool:
        return self.loss.needs_teacher

    @property
    def needs_embedding(self) -> bool:
        return self.loss.needs_embedding

    def __call__(self, student_logits, teacher_logits, labels, embeddings: Embeddings | None = None):
        if embeddings is None:  # losses from logits alone may take three arguments
            return self.loss(student_logits, teacher_logits, labels)
        return self.loss(student_logits, teacher_logits, labels, embeddings)


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_WITH_TEACHER",
    "DEFAULT_WITHOUT_TEACHER",
    "LOSSES",
    "CrossEntropy",
    "Distillation",
    "EmbedCosine",
    "EmbedCosineL1",
    "Embeddings",
    "Relational",
    "HardTargets",
    "Loss",
    "Objective",
    "check_kd_settings",
    "default_loss",
    "describe_losses",
    "get_loss",
    "hard_loss",
    "kd_loss",
    "teacher_losses",
]
