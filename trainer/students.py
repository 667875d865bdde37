"""Students: specs -> trainable modules (the teachers' registry), and the input each one takes.

A student spec is a zoo name (`softlabels.zoo.list_models()`), `torchvision:NAME` or `FILE.py:FUNC`;
archives (TorchScript, .pt2) are frozen programs and cannot be students. Datasets hand out
un-normalised [0, 1] images at the size of the data; the student's statistics come from
`softlabels.inputs.resolve_input`, and it normalises its own batch on the device
(`softlabels.pipeline.Normalize`).
"""

from __future__ import annotations

import torch
from torch import nn

from softlabels.inputs import Preprocessing, resolve_input
from softlabels.models import create_model, source_for
from softlabels.zoo import list_models


def list_students() -> list[str]:
    return list_models()


def create_student(spec: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A freshly initialised student (seed torch first for reproducible weights).

    Raises:
        ValueError: unknown specs, and archives (frozen programs cannot be trained).
    """
    if not source_for(spec).trainable:
        raise ValueError(
            f"{spec} is a model archive (fixed weights and graph) and cannot be trained; "
            f"name a zoo model ({', '.join(list_students())}), torchvision:NAME or FILE.py:FUNC"
        )
    return create_model(spec, num_classes, in_channels=in_channels, image_size=image_size)


def student_input(spec: str, data: Preprocessing, mean=None, std=None) -> Preprocessing:
    """The student's input on views of `data`'s channels and size: statistics from `resolve_input`
    (--mean/--std, else the model's declared ones where they fit the channels, else the data's)."""
    prep = resolve_input(spec, data, mean=mean, std=std, image_size=data.image_size)
    if prep.channels != data.channels:
        raise ValueError(f"--mean/--std give {prep.channels} channel(s) but the images have {data.channels}")
    return prep


def probe_student(model: nn.Module, spec: str, prep: Preprocessing, num_classes: int) -> None:
    """Run a 2-image batch through a fresh student so a shape problem reads as a clear error."""
    probe = torch.zeros(2, prep.channels, prep.image_size, prep.image_size, device=next(model.parameters()).device)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(probe.contiguous(memory_format=torch.channels_last))
    except RuntimeError as err:
        raise ValueError(
            f"student {spec} cannot run on {prep.describe()} images ({str(err).splitlines()[0]})"
        ) from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, num_classes):
        raise ValueError(
            f"student {spec} returned shape {tuple(out.shape)} for 2 images; expected (2, {num_classes}) "
            f"logits, one per class"
        )
