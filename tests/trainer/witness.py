"""`Witness`: a hook that records what each training step fed the loss (the batch of images, the
student's logits, the targets and labels, the loss value), so tests check what a run trained on, not
only that it finished."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainer import Hook


@dataclass
class Step:
    images: torch.Tensor  # the batch as the loader served it, before normalisation
    student: torch.Tensor
    targets: torch.Tensor | None
    labels: torch.Tensor
    loss: torch.Tensor


def _copy(batch):
    """A detached copy of a batch: a tensor, or a dict of tensors (tensor samples)."""
    if isinstance(batch, dict):
        return {name: _copy(value) for name, value in batch.items()}
    return batch.detach().clone()


@dataclass
class Witness(Hook):
    steps: list[Step] = field(default_factory=list)

    def on_fit_start(self, run, progress):
        seen: dict = {}
        run.normalize.register_forward_pre_hook(lambda module, args: seen.update(images=_copy(args[0])))
        objective = run.objective

        def recorded(student, targets, labels, *embeddings):
            loss = objective(student, targets, labels, *embeddings)
            self.steps.append(
                Step(
                    seen["images"],
                    student.detach().clone(),
                    None if targets is None else targets.detach().clone(),
                    labels.clone(),
                    loss.detach().clone(),
                )
            )
            return loss

        run.objective = recorded
