"""`hard`: cross-entropy on the teacher's arg-max class (the seed article's objective)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.losses.base import Loss, one_hot


def hard_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against the teacher's arg-max class (the seed article's objective)."""
    return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=-1), label_smoothing=label_smoothing)


class HardTargets(Loss):
    name = "hard"
    description = "cross-entropy on the teacher's arg-max class"
    needs = frozenset({"logits"})
    needs_teacher = True

    def __call__(self, student_logits, teacher_logits, labels, embeddings=None):
        return hard_loss(student_logits, teacher_logits, self.label_smoothing)

    def class_weights(self, labels, teacher_logits, num_classes) -> np.ndarray:
        return one_hot(teacher_logits.argmax(-1), num_classes)
