"""A model's penultimate features: what enters its last `nn.Linear` (timm's pre-logits, torchvision's
`fc`/`classifier` input, our zoo's `linear`/`classifier`), pooled to (B, D) when it has more axes.

One function, `penultimate_features`, for everything that looks at features instead of classes
(the probes of `trainer.probes`). A model without any `nn.Linear` is taken as an encoder: its output
is the features, and it has no logits.
"""

from __future__ import annotations

import torch
from torch import nn


def last_linear(model: nn.Module) -> nn.Linear | None:
    """The model's last `nn.Linear` in registration order (its classifier head), or None."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    return found


def pooled(x: torch.Tensor) -> torch.Tensor:
    """(B, D) from (B, D), or from (B, C, ...) by averaging every axis after the channels."""
    return x.flatten(2).mean(dim=2) if x.ndim > 2 else x


def penultimate_features(model: nn.Module, x) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(logits or None, (B, D) features) of one forward pass of `model` on `x`.

    Features are the input of the last `nn.Linear`, captured by a forward hook (so any model whose
    head is a Linear works unchanged); for a model without one, its output pooled to (B, D), and no logits.
    """
    head = last_linear(model)
    if head is None:
        return None, pooled(model(x))
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"{type(model).__name__}: its last nn.Linear did not run in the forward pass")
    features = captured[-1]
    if features.ndim > 2:  # a Linear acts on the last axis: average over the others (tokens, positions)
        features = features.reshape(len(features), -1, features.shape[-1]).mean(dim=1)
    return logits, features
