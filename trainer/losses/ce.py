"""`ce`: cross-entropy on the labels alone, the baseline without a teacher."""

from __future__ import annotations

import numpy as np

from trainer.losses.base import Loss, label_cross_entropy, one_hot


class CrossEntropy(Loss):
    name = "ce"
    description = "cross-entropy on the labels alone"
    needs = frozenset({"labels"})

    @property
    def label_term(self) -> str | None:
        return f"labels only (--loss {self.name})"

    def __call__(self, student_logits, teacher_logits, labels, embeddings=None):
        return label_cross_entropy(student_logits, labels, self.label_smoothing).mean()  # 0 without a label

    def class_weights(self, labels, teacher_logits, num_classes) -> np.ndarray:
        return one_hot(labels, num_classes)
