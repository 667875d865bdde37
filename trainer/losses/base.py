"""`Loss`: the contract every training objective fulfils, and what it declares about itself.

An entry says what it needs (teacher targets, the temperature and alpha settings), whether it keeps
a label term (mixed views refuse one), how it turns teacher logits into per-class sample weights for
a scikit-learn student, and a one-line description for help texts. The loop, the sweep, the config
checks and the scikit-learn path ask these instead of comparing names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from softlabels.store.schema import NO_LABEL


def check_kd_settings(temperature: float, alpha: float) -> None:
    """Raise ValueError for a temperature that is not positive or an alpha outside [0, 1]."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1] (weight of the teacher term), got {alpha}")


class Embeddings(NamedTuple):
    """What an embedding loss compares: the student's (B, d) features, the teacher's stored (B, D)
    embeddings, and the learned projection d -> D (None for losses that need none)."""

    student: torch.Tensor
    teacher: torch.Tensor
    projection: torch.nn.Module | None = None


@dataclass(frozen=True)
class Loss(ABC):
    """One training objective with its settings, called as loss(student_logits, teacher_logits, labels).

    Every loss carries the same three settings (the options of `trainer fit`); `settings` names the
    ones that shape it, which a sweep varies and a run's title shows.
    """

    temperature: float
    alpha: float
    label_smoothing: float = 0.0

    name: ClassVar[str]
    description: ClassVar[str]  # one line, for help texts
    needs_teacher: ClassVar[bool] = False  # teacher targets: a cache or an online teacher
    settings: ClassVar[tuple[str, ...]] = ()  # of ("temperature", "alpha")
    needs: ClassVar[frozenset[str]] = frozenset({"labels"})  # of "logits", "embedding", "labels"
    projection: ClassVar[bool] = False  # a learned student -> teacher projection, trained with the student
    trains_classifier: ClassVar[bool] = True  # False: the loss never reads the student's logits, only its features

    @property
    def needs_embedding(self) -> bool:
        return "embedding" in self.needs

    def __post_init__(self):
        check_kd_settings(self.temperature, self.alpha)
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label smoothing must lie in [0, 1), got {self.label_smoothing}")

    @property
    def label_term(self) -> str | None:
        """What learns from the labels, in words for a message (None: the labels are not used)."""
        return None

    def check_finite(self) -> None:  # noqa: B027 (most losses have no such settings)
        """Raise ValueError for settings that can only give a non-finite loss in float32."""

    def check_batch_size(self, batch_size: int) -> None:  # noqa: B027 (most losses take any batch)
        """Raise ValueError for a batch size the loss cannot learn from."""

    @abstractmethod
    def __call__(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        labels: torch.Tensor,
        embeddings: Embeddings | None = None,
    ) -> torch.Tensor:
        """The batch mean, in float32 whatever the autocast dtype of the logits; `embeddings` for
        losses that need them."""

    @abstractmethod
    def class_weights(self, labels: np.ndarray, teacher_logits: np.ndarray, num_classes: int) -> np.ndarray:
        """(n, C) weights of each sample's classes, for a student that only takes hard labels (scikit-learn):
        every sample is repeated once per class with its weight."""


def labelled(labels: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which samples have a label. A batch of a labelled and an unlabelled cache trained
    together (`trainer fit --cache L.h5 --cache U.h5`) marks the others `NO_LABEL`."""
    return labels != NO_LABEL


def label_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """(B,) cross-entropy of each sample against its label, 0 for a sample without one.

    Losses average per-sample losses over the whole batch, so a sample without a label simply has no
    label term: the loss of a batch never divides by how many of its samples have labels, and is the
    same whether the batch is split over ranks (DDP averages equal-sized shares) or not.
    """
    return F.cross_entropy(
        logits.float(), labels, ignore_index=NO_LABEL, reduction="none", label_smoothing=label_smoothing
    )


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes)[classes]
