"""The learned projection of losses from embeddings: student features (d) -> teacher embedding (D).

It is trained with the student (its parameters join the optimizer) and saved apart from it, as
`projection.pt` beside `best.pt` ({"state_dict", "in_features", "out_features", "loss"}): the
student's own weights stay what `softlabels build --weights` and a deployment read. A resumable
`last.pt` carries it under "projection".
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from softlabels.models.features import last_linear

PROJECTION = "projection.pt"


def student_width(student: nn.Module) -> int:
    """d: the width of the features entering the student's classifier (its last nn.Linear)."""
    head = last_linear(student)
    if head is None:
        raise ValueError(
            "a loss from embeddings reads the student's penultimate features: the input of its last "
            "nn.Linear, and this student has none"
        )
    return head[1].in_features


def make_projection(student: nn.Module, teacher_dim: int, device: torch.device) -> nn.Linear:
    """A linear map from the student's features to the teacher's embedding width (seeded by the caller)."""
    return nn.Linear(student_width(student), teacher_dim).to(device)


def save_projection(projection: nn.Module, loss: str, path: Path) -> Path:
    state = {k: v.detach().cpu() for k, v in projection.state_dict().items()}
    weight = state["weight"]
    torch.save(
        {"state_dict": state, "in_features": weight.shape[1], "out_features": weight.shape[0], "loss": loss}, path
    )
    return path
