"""A model's features: what enters its classifier, or the output of a named layer, pooled to (B, D).

One place answers "which tensor is this model's embedding" for the teacher pass (`EmbeddingTap`,
`--embedding-layer`), a recompute, and the trainer's students (`penultimate_features`):
- a classifier (a model whose output is produced by an `nn.Linear`, the last one it holds: timm's
  and torchvision's heads, a user's final layer) -> the input of that layer (timm's pre-logits);
- `--embedding-layer NAME` -> the output of module NAME, averaged over its spatial or token axes;
- an encoder (no final `nn.Linear` produces its output: a `FILE.py:FUNC` returning (B, D), a timm
  model with `num_classes=0`, a sentence encoder) -> its output itself.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn


def pool(features: torch.Tensor) -> torch.Tensor:
    """(B, D) as it is; (B, C, H, W) and deeper: the mean over spatial axes; (B, T, D): the mean over tokens."""
    if features.ndim == 2:
        return features
    if features.ndim == 3:
        return features.mean(dim=1)
    if features.ndim > 3:
        return features.flatten(2).mean(dim=2)
    raise ValueError(f"cannot pool features of shape {tuple(features.shape)} to (batch, dim)")


def last_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The last `nn.Linear` of the model in module order (its classifier, when it has one)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """Module `name` of the model; a name that does not exist is refused listing the nearest names."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    near = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.4)
    hint = f"; nearest: {', '.join(near)}" if near else f"; it has e.g. {', '.join(list(modules)[1:6])}"
    raise ValueError(f"--embedding-layer {name!r}: the model has no module of that name{hint}")


class EmbeddingTap:
    """Records a model's embedding on every forward call (`layer`: a module name, or None: the default
    above). Use as a context manager: the hook is removed on exit; `take()` returns the last pooled
    (B, D) features (float32)."""

    def __init__(self, model: nn.Module, layer: str | None = None):
        self.model, self.layer = model, layer
        self._seen: torch.Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._head_output: torch.Tensor | None = None

    def __enter__(self) -> EmbeddingTap:
        if self.layer is not None:
            module = find_layer(self.model, self.layer)
            self._handle = module.register_forward_hook(lambda _m, _i, out: self._keep(_tensor(out)))
            return self
        head = last_linear(self.model)
        if head is not None:
            self._handle = head[1].register_forward_hook(self._keep_head)
        return self

    def _keep(self, tensor: torch.Tensor) -> None:
        # Pooled (a new tensor) or copied now: a later in-place op (ReLU(inplace=True) after a
        # convolution, as in torchvision's ResNets) would otherwise change what was recorded.
        pooled = pool(tensor)
        self._seen = pooled.clone() if pooled is tensor else pooled

    def _keep_head(self, _module, inputs, output) -> None:
        self._keep(inputs[0])
        self._head_output = output

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def made_by_head(self, output) -> bool:
        """Whether `output` (of the last forward call) is what the model's last `nn.Linear` returned."""
        return self._head_output is not None and self._head_output is output

    def take(self, output: torch.Tensor) -> torch.Tensor:
        """The embedding of the forward call that returned `output` (pooled, float32)."""
        by_head, seen = self.made_by_head(output), self._seen
        self._seen = self._head_output = None  # hold no tensor past its batch
        if self.layer is None and not by_head:
            return pool(output).float()  # an encoder: its output is the embedding
        if seen is None:
            raise ValueError(f"--embedding-layer {self.layer!r} did not run in the model's forward pass")
        return pool(seen).float()


def _tensor(out) -> torch.Tensor:
    """A module's output as one tensor (the first of a tuple; a Hugging Face output's last hidden state)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    hidden = getattr(out, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise ValueError(f"the embedding layer returns {type(out).__name__}, not a tensor")


def penultimate_features(model: nn.Module, x) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(logits, features) of a student: the features are the input of its last `nn.Linear`, pooled to
    (B, D), when that layer produces the output (logits: the output); else the output is the features
    and logits are None. Gradients flow through both."""
    with EmbeddingTap(model) as tap:
        output = model(x)
        by_head = tap.made_by_head(output)
        features = tap.take(output)
    return (output if by_head else None), features
