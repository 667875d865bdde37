"""Teachers: a model spec plus its weights, in eval mode, with the input it takes and where it came from.

`load_teacher` is what the teacher pass, `verify --recompute` and online KD use: it reads the weights
(`softlabels.models.weights`), asks `softlabels.models.inputs.resolve_input` what input the model
takes, and builds the module for that input with its weights (`load_model`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from softlabels.models.inputs import resolve_input
from softlabels.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from softlabels.models.registry import source_for
from softlabels.models.weights import load_model, read_weights, sha256_file, state_dict_sha256

DEFAULT_DATA = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 32)


# A teacher without weights is initialised from this seed, so every process of a build and
# `verify --recompute` later make the same network (and the recompute does not cry "altered").
RANDOM_INIT_SEED = 0


class RandomTeacherWarning(UserWarning):
    """A teacher runs without weights: its outputs are those of a randomly initialised network."""


@dataclass
class Teacher:
    """A model in eval mode, the input it takes, and where it came from (for an archive, `weights` is
    the archive itself)."""

    model: nn.Module
    spec: str
    input: Preprocessing
    weights: str | None
    weights_sha256: str | None
    num_params: int

    @property
    def weights_name(self) -> str | None:
        return None if self.weights is None else Path(self.weights).name


def load_teacher(
    spec: str | None,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    *,
    data: Preprocessing | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image_size: int | None = None,
    recorded: Preprocessing | None = None,
) -> Teacher:
    """Create the model a spec names, load its weights (if any) and put it in eval mode.

    Args:
        spec: zoo name, `timm:NAME`, `torchvision:NAME`, `FILE.py:FUNC` or archive path
            (`softlabels.models`); None: the spec the weights record (weights from `trainer fit`).
        weights: a weights file (checkpoint or `.safetensors`), or weights the source names itself
            (`DEFAULT`, `IMAGENET1K_V2` for torchvision, `pretrained` for timm); none for archives.
        num_classes: output classes [default: what the weights record, else 1000 for torchvision
            and timm, else 10]; archives ignore it. 0: an encoder without its classifier (timm's
            num_classes=0, whose output is the pooled features), for embedding caches.
        trust_checkpoint: allow full unpickling of `weights` (runs code from the file).
        data: the data's own input (channels, size, statistics) [default: RGB 32 px, ImageNet statistics].
        mean, std, image_size: explicit input overrides.
        recorded: the input a cache records for this teacher (`verify --recompute`): taken whole.
    Returns:
        The `Teacher`, with the resolved `input`.
    Raises:
        ValueError / FileNotFoundError: unknown specs, unreadable or mismatching weights.
    """
    if spec is not None and weights is not None and source_for(spec).carries_weights:
        raise ValueError(f"{spec} is an archive that carries its own weights; drop --weights {weights}")
    named = weights is not None and spec is not None and source_for(spec).named_weights(spec, str(weights))
    loaded = read_weights(weights, trust_checkpoint) if weights is not None and not named else None
    spec = spec or (loaded.spec if loaded else None)
    if spec is None:
        raise ValueError("give --teacher SPEC: the weights do not record which model they belong to")
    source = source_for(spec)
    model_input = resolve_input(
        spec,
        data or DEFAULT_DATA,
        weights=None if weights is None else str(weights),
        trained=loaded.input if loaded else None,
        mean=mean,
        std=std,
        image_size=image_size,
        recorded=recorded,
    )
    if named:
        classes = _named_classes(source, spec, str(weights), num_classes)
        model, _ = load_model(spec, classes, *model_input.model_geometry, weights=str(weights))
        return _teacher(model, spec, model_input, str(weights), state_dict_sha256(model))
    if num_classes is None:
        num_classes = (loaded.num_classes if loaded else None) or source.default_classes
    if num_classes == 0 and not source.encoders:
        raise ValueError(
            f"--num-classes 0 asks {spec} for an encoder without its classifier, which only timm:NAME models "
            f"build (timm's num_classes=0); a FILE.py:FUNC encoder returns its (batch, dim) features itself"
        )
    state = None if loaded is None else loaded.state_dict
    model, _ = load_model(spec, num_classes, *model_input.model_geometry, state_dict=state)
    if weights is None and not source.carries_weights and not getattr(model, "pretrained", False):
        warnings.warn(
            f"teacher {spec} has no --weights: it is randomly initialised, and its outputs teach nothing",
            RandomTeacherWarning,
            stacklevel=2,
        )
    origin = Path(spec).expanduser() if source.carries_weights else weights
    return _teacher(
        model,
        spec,
        model_input,
        None if origin is None else str(origin),
        None if origin is None else sha256_file(origin),
    )


def _named_classes(source, spec: str, weights: str, num_classes: int | None) -> int:
    """The class count of weights its source fetches itself: a teacher keeps their head."""
    if num_classes == 0 and source.encoders:
        return 0  # the fetched weights less their classifier (timm drops it for num_classes=0)
    classes = source.pretrained_classes(spec, weights) if hasattr(source, "pretrained_classes") else None
    if num_classes is not None and classes is not None and num_classes != classes:
        raise ValueError(
            f"{spec} with --weights {weights} outputs {classes} classes but {num_classes} are asked for "
            f"(--num-classes, or the dataset's classes): a teacher must output the dataset's classes; "
            f"fine-tune it first (trainer fit --student {spec} --weights {weights} --loss ce)"
        )
    return classes or num_classes or source.default_classes


def _teacher(
    model: nn.Module, spec: str, model_input: Preprocessing, weights: str | None, digest: str | None
) -> Teacher:
    return Teacher(
        model=model.eval(),
        spec=spec,
        input=model_input,
        weights=weights,
        weights_sha256=digest,
        num_params=sum(p.numel() for p in model.parameters()),
    )
