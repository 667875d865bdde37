"""Students: specs -> trainable modules (the teachers' registry), and the on-device normalisation.

A student spec is a zoo name (`softlabels.zoo.list_models()`), `torchvision:NAME` or `FILE.py:FUNC`;
archives (TorchScript, .pt2) are frozen programs and cannot be students. Datasets hand out
un-normalised [0, 1] images; each model normalises its own batch on the device (`Normalize`), so
online KD can feed one batch to a teacher and a student that expect different statistics.
"""
from __future__ import annotations

import torch
from torch import nn

from softlabels.teachers import archive_path, create_model
from softlabels.transforms import Preprocessing
from softlabels.zoo import ZOO, list_models


def list_students() -> list[str]:
    return list_models()


def create_student(spec: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A freshly initialised student (seed torch first for reproducible weights)."""
    if archive_path(spec) is not None:
        raise ValueError(f"{spec} is a model archive (fixed weights and graph) and cannot be trained; "
                         f"name a zoo model ({', '.join(list_students())}), torchvision:NAME or FILE.py:FUNC")
    model, _ = create_model(spec, num_classes, in_channels=in_channels, image_size=image_size)
    return model


def probe_student(model: nn.Module, spec: str, prep: Preprocessing, num_classes: int) -> None:
    """Run a 2-image batch through a fresh student so a shape problem reads as a clear error."""
    probe = torch.zeros(2, prep.channels, prep.image_size, prep.image_size, device=next(model.parameters()).device)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(probe.contiguous(memory_format=torch.channels_last))
    except RuntimeError as err:
        raise ValueError(f"student {spec} cannot run on {prep.channels}x{prep.image_size}x{prep.image_size} images "
                         f"({str(err).splitlines()[0]})") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, num_classes):
        raise ValueError(f"student {spec} returned shape {tuple(out.shape)} for 2 images; expected (2, {num_classes}) "
                         f"logits, one per class")


def zoo_preprocessing(spec: str) -> dict | None:
    """The preprocessing a zoo entry declares (the published weights' statistics), else None."""
    entry = ZOO.get(spec)
    return None if entry is None or entry.preprocessing is None else dict(entry.preprocessing)


def model_preprocessing(spec: str, data: Preprocessing, mean=None, std=None) -> Preprocessing:
    """A model's normalisation: --mean/--std, else its zoo entry's, else the data's; size from the data.

    The same precedence as `softlabels build` uses for teachers, so a checkpoint trained here builds
    a cache with the statistics it was trained with, without extra flags.
    """
    chosen = {"mean": data.mean, "std": data.std}
    declared = zoo_preprocessing(spec)
    if declared and len(declared["mean"]) == data.channels:
        chosen.update(mean=declared["mean"], std=declared["std"])
    chosen.update({k: v for k, v in (("mean", mean), ("std", std)) if v is not None})
    prep = Preprocessing(tuple(chosen["mean"]), tuple(chosen["std"]), data.image_size)
    if prep.channels != data.channels:
        raise ValueError(f"--mean/--std give {prep.channels} channel(s) but the images have {data.channels}")
    return prep


class Normalize(nn.Module):
    """(x - mean) / std on (N, C, H, W) batches, with the arithmetic of `softlabels.transforms.finish`."""

    def __init__(self, prep: Preprocessing):
        super().__init__()
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
