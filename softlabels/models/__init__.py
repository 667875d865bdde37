"""Models: which input a model takes, where its architecture comes from, and its weights.

- `preprocessing`: `Preprocessing`, a model's input as caches and checkpoints record it (no torch);
- `inputs`: `resolve_input`, the one place that decides that input, and `data_input`;
- `registry`: model specs -> modules (`source_for`, `create_model`, `declared_input`), over the
  sources `zoo` (the built-in architectures), `timm_models`, `torchvision_models`,
  `sklearn_models`, `factory` (`FILE.py:FUNC`) and `archive` (TorchScript, `.pt2`);
- `weights`: reading weights files and loading them into a model exactly (`load_model`);
- `teachers`: `load_teacher`, a model with its weights and its input, in eval mode.

Nothing is imported here, so reading the input record (`preprocessing`) never imports torch.
"""
