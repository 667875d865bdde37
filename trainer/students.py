"""Students: specs -> trainable modules (the teachers' registry), and the input each one takes.

A student spec is a zoo name (`softlabels.models.zoo.list_models()`), `torchvision:NAME` or
`FILE.py:FUNC`; archives (TorchScript, .pt2) are frozen programs and cannot be students. Datasets hand
out un-normalised [0, 1] images at the size of the data; the student's statistics come from
`softlabels.models.inputs.resolve_input`, and it normalises its own batch on the device
(`softlabels.views.Normalize`).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from softlabels.models.inputs import resolve_input
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.registry import source_for
from softlabels.models.weights import load_model, read_weights
from softlabels.models.zoo import list_models
from softlabels.views import to_device


def list_students() -> list[str]:
    return list_models()


def create_student(
    spec: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    weights: str | None = None,
    trust_checkpoint: bool = False,
) -> nn.Module:
    """A student: freshly initialised (seed torch first for reproducible weights), or fine-tuned from
    `weights` (a file, or `pretrained` / `DEFAULT` ... for timm and torchvision) with a new classifier
    where the weights have another class count.

    Raises:
        ValueError: unknown specs, archives (frozen programs cannot be trained), mismatching weights.
    """
    source = source_for(spec)
    if not source.trainable:
        raise ValueError(
            f"{spec} is a model archive (fixed weights and graph) and cannot be trained; name a zoo "
            f"model ({', '.join(list_students())}), timm:NAME, torchvision:NAME or FILE.py:FUNC"
        )
    named = weights is not None and source.named_weights(spec, weights)
    state = read_weights(weights, trust_checkpoint).state_dict if weights is not None and not named else None
    model, fresh = load_model(spec, num_classes, in_channels, image_size, weights, state, new_head=True)
    if fresh:
        warnings.warn(
            f"{spec}: a new {num_classes}-class head ({', '.join(fresh)}) on the weights of {weights}",
            NewHeadWarning,
            stacklevel=2,
        )
    return model


class NewHeadWarning(UserWarning):
    """Fine-tuning replaced the classifier of the starting weights (another class count)."""


def student_input(
    spec: str, views: Preprocessing, mean=None, std=None, data: Preprocessing | None = None
) -> Preprocessing:
    """The student's input on given views (a cache's, an online teacher's): their geometry, with
    statistics from `resolve_input` (--mean/--std, else the model's declared ones where they fit the
    channels, else the data's: `data`, the dataset's own input, else the views')."""
    return resolve_input(spec, data or views, views=views, mean=mean, std=std)


def labelled_input(
    spec: str,
    data: Preprocessing,
    weights: str | None = None,
    trust_checkpoint: bool = False,
    mean=None,
    std=None,
    image_size: int | None = None,
) -> Preprocessing:
    """The student's input when it learns from labels alone: its views are made for it, so the
    model's declared input (an eval transform, a zoo entry's size) and its starting weights' recorded
    input apply, as for a teacher."""
    trained = None
    if weights is not None and not source_for(spec).named_weights(spec, weights):
        trained = read_weights(weights, trust_checkpoint).input
    return resolve_input(spec, data, weights=weights, trained=trained, mean=mean, std=std, image_size=image_size)


def probe_student(model: nn.Module, spec: str, prep: Preprocessing, num_classes: int, example=None) -> None:
    """Run a batch of 2 through a fresh student so a shape problem reads as a clear error: zeros of the
    image size, or `example` (two real tensor samples, which may be dicts of tensors)."""
    device = next(model.parameters()).device
    if example is None:
        probe = torch.zeros(2, prep.channels, prep.image_size, prep.image_size, device=device)
    else:
        probe = to_device(example, device, next(p.dtype for p in model.parameters() if p.is_floating_point()))
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(to_device(probe, device))
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as err:
        what = f"{prep.describe()} images" if prep.is_image else f"samples {_shapes(probe)}"
        raise ValueError(
            f"student {spec} cannot run on {what} ({str(err).splitlines()[0]}); for tensor or dict "
            f"samples use a FILE.py:FUNC model that takes them, or linear / mlp for flat features"
        ) from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, num_classes):
        raise ValueError(
            f"student {spec} returned shape {tuple(out.shape)} for 2 images; expected (2, {num_classes}) "
            f"logits, one per class"
        )


def _shapes(batch) -> str:
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in batch.items()) + "}"
    return f"{tuple(batch.shape)} {batch.dtype}"
