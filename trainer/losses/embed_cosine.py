"""`embed-cosine` and `embed-cosine-l1`: regress the teacher's stored embedding through a learned projection.

The student's penultimate features (d) go through a linear projection to the teacher's width (D),
trained with the student and saved apart from it (`projection.pt` beside the student's weights), as
in timm's feature distillation and the adaptor heads of RADIO/Theia. The loss is 1 - cosine between
projection and teacher embedding; `embed-cosine-l1` adds a smooth-L1 term on the teacher embedding
standardised per row (zero mean, unit variance: the scale of a teacher's features is its own).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from trainer.losses.base import Embeddings, Loss


def cosine_loss(projected: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cosine(projected, teacher) over the batch, in float32."""
    return (1 - F.cosine_similarity(projected.float(), teacher.float(), dim=-1)).mean()


def standardised(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True).clamp_min(1e-6)


class EmbedCosine(Loss):
    name = "embed-cosine"
    description = "1 - cosine between the teacher's embedding and the student's features through a learned projection"
    needs_teacher = True
    needs = frozenset({"embedding"})
    projection = True
    trains_classifier = False
    l1_weight: ClassVar[float] = 0.0

    def __call__(self, student_logits, teacher_logits, labels, embeddings: Embeddings | None = None):
        if embeddings is None or embeddings.projection is None:
            raise ValueError(f"--loss {self.name} needs the teacher's embeddings and a projection")
        projected = embeddings.projection(embeddings.student.float())
        loss = cosine_loss(projected, embeddings.teacher)
        if self.l1_weight:
            loss = loss + self.l1_weight * F.smooth_l1_loss(standardised(projected), standardised(embeddings.teacher))
        return loss

    def class_weights(self, labels, teacher_logits, num_classes) -> np.ndarray:
        raise ValueError(f"--loss {self.name} trains from embeddings: a scikit-learn student takes class weights only")


class EmbedCosineL1(EmbedCosine):
    name = "embed-cosine-l1"
    description = "embed-cosine plus a smooth-L1 term on the row-standardised embeddings"
    l1_weight = 1.0
