"""Teachers: a model spec plus its weights, in eval mode, with the input it takes and where it came from.

`load_teacher` is what the teacher pass, `verify --recompute` and online KD use: it reads the weights
(`softlabels.weights`), asks `softlabels.inputs.resolve_input` what input the model takes, builds the
module for that input (`softlabels.models`) and loads the weights into it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from softlabels.datasets import IMAGENET_MEAN, IMAGENET_STD
from softlabels.inputs import Preprocessing, resolve_input
from softlabels.models import create_model, source_for
from softlabels.store.schema import TeacherRecord
from softlabels.weights import load_weights, read_weights, sha256_file

DEFAULT_NUM_CLASSES = 10
TORCHVISION_NUM_CLASSES = 1000
DEFAULT_DATA = Preprocessing(IMAGENET_MEAN, IMAGENET_STD, 32)


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

    def record(self) -> TeacherRecord:
        """Provenance for a cache: spec, weights file name and hash, size and class of the model."""
        return TeacherRecord(
            spec=self.spec,
            weights=self.weights,
            weights_name=self.weights_name,
            weights_sha256=self.weights_sha256,
            num_params=self.num_params,
            model_class=getattr(self.model, "original_name", type(self.model).__name__),
        )


def load_teacher(
    spec: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    *,
    data: Preprocessing | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image_size: int | None = None,
) -> Teacher:
    """Create the model a spec names, load its weights (if any) and put it in eval mode.

    Args:
        spec: zoo name, `torchvision:NAME`, `FILE.py:FUNC` or archive path (`softlabels.models`).
        weights: a checkpoint path (none for archives, which carry their own).
        num_classes: output classes [default: 1000 for torchvision:NAME, else 10]; archives ignore it.
        trust_checkpoint: allow full unpickling of `weights` (runs code from the file).
        data: the data's own input (channels, size, statistics) [default: RGB 32 px, ImageNet statistics].
        mean, std, image_size: explicit input overrides.
    Returns:
        The `Teacher`, with the resolved `input`.
    Raises:
        ValueError / FileNotFoundError: unknown specs, unreadable or mismatching weights.
    """
    source = source_for(spec)
    if source.carries_weights and weights is not None:
        raise ValueError(f"{spec} is an archive that carries its own weights; drop --weights {weights}")
    if weights is None and not source.carries_weights:
        warnings.warn(
            f"teacher {spec} has no --weights: it is randomly initialised, and its outputs teach nothing",
            RandomTeacherWarning,
            stacklevel=2,
        )
    loaded = read_weights(weights, trust_checkpoint) if weights is not None else None
    model_input = resolve_input(
        spec, data or DEFAULT_DATA, trained=loaded.input if loaded else None, mean=mean, std=std, image_size=image_size
    )
    if num_classes is None:
        num_classes = TORCHVISION_NUM_CLASSES if source.name == "torchvision" else DEFAULT_NUM_CLASSES
    model = create_model(spec, num_classes, model_input.channels, model_input.image_size)
    if loaded is not None:
        load_weights(model, loaded.state_dict)
    origin = Path(spec).expanduser() if source.carries_weights else weights
    return Teacher(
        model=model.eval(),
        spec=spec,
        input=model_input,
        weights=None if origin is None else str(origin),
        weights_sha256=None if origin is None else sha256_file(origin),
        num_params=sum(p.numel() for p in model.parameters()),
    )
