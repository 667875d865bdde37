"""`embed-relational`: match the teacher's in-batch similarity structure; no projection, any student width.

For a batch of B views, each row of the cosine-similarity matrix (the view against the B - 1 others)
becomes a distribution by a softmax at temperature `SIMILARITY_TEMPERATURE`; the loss is the KL
divergence from the teacher's rows to the student's, as in MobileCLIP's distillation from
DataCompDR's stored embeddings (there image-text; here view-view, the diagonal left out).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trainer.losses.base import Embeddings, Loss

SIMILARITY_TEMPERATURE = 0.1  # cosine similarities lie in [-1, 1]: 0.1 makes rows usefully peaked


def similarity_logits(features: torch.Tensor, temperature: float = SIMILARITY_TEMPERATURE) -> torch.Tensor:
    """(B, B) cosine similarities / temperature, the diagonal masked out (-inf)."""
    unit = F.normalize(features.float(), dim=-1)
    sims = unit @ unit.T / temperature
    return sims.masked_fill(torch.eye(len(sims), dtype=torch.bool, device=sims.device), float("-inf"))


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher rows || student rows) of the in-batch similarity distributions, averaged over rows."""
    if len(student) < 2:
        return student.float().sum() * 0  # one view has no others to relate to
    log_s = F.log_softmax(similarity_logits(student), dim=-1)
    log_t = F.log_softmax(similarity_logits(teacher), dim=-1)
    off = ~torch.eye(len(student), dtype=torch.bool, device=student.device)  # -inf - -inf is nan: leave it out
    return (log_t.exp() * (log_t - log_s))[off].sum() / len(student)


class Relational(Loss):
    name = "embed-relational"
    description = "KL between the teacher's and the student's in-batch similarity rows (no projection)"
    needs_teacher = True
    needs = frozenset({"embedding"})
    trains_classifier = False

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < 2:
            raise ValueError(
                f"--loss {self.name} relates the views of a batch to each other, and --batch-size 1 leaves a view "
                f"none to relate to (the term would be 0 at every step): use --batch-size 2 or more"
            )

    def __call__(self, student_logits, teacher_logits, labels, embeddings: Embeddings | None = None):
        if embeddings is None:
            raise ValueError(f"--loss {self.name} needs the teacher's embeddings")
        return relational_loss(embeddings.student, embeddings.teacher)

    def class_weights(self, labels, teacher_logits, num_classes) -> np.ndarray:
        raise ValueError(f"--loss {self.name} trains from embeddings: a scikit-learn student takes class weights only")
