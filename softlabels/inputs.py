"""What a model takes as input, and the one place that decides it (`resolve_input`).

`Preprocessing` is a model's input: the channel count (the length of `mean`), the square size and
the normalisation. It is recorded in every cache and every trainer checkpoint. `resolve_input`
answers "what input does this model take here?" for every caller: the teacher pass, online KD,
students and `verify --recompute`. Precedence, field by field:

1. flags (`--mean`, `--std`, `--image-size`);
2. what the weights were trained with, when they record it (checkpoints written by `trainer fit`);
3. what the model declares (a zoo entry's published statistics), when its channel count matches
   the data's (RGB statistics do not fit grey images and the other way round);
4. the data's own defaults (channels, size and statistics of the dataset).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preprocessing:
    """A model's input: size and normalisation; len(mean) is the channel count."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "image_size", int(self.image_size))
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise ValueError(f"mean and std need 1 or 3 values each (one per channel), got {self.mean} and {self.std}")
        if not all(math.isfinite(value) for value in (*self.mean, *self.std)):
            raise ValueError(f"mean and std must be finite numbers, got {self.mean} and {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"std values must be positive, got {self.std}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be at least 1, got {self.image_size}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(tuple(d["mean"]), tuple(d["std"]), int(d["image_size"]))

    def describe(self) -> str:
        return f"{self.channels}x{self.image_size}x{self.image_size}"


def data_input(defaults: dict, channels: int | None = None, image_size: int | None = None) -> Preprocessing:
    """A dataset's defaults (`DatasetSource.defaults`) as an input, optionally for another channel count
    (grey statistics repeated, RGB averaged) or size."""
    mean, std = tuple(defaults["mean"]), tuple(defaults["std"])
    channels = channels or len(mean)
    return Preprocessing(_fit(mean, channels), _fit(std, channels), image_size or defaults["image_size"])


def _fit(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if len(values) == channels:
        return values
    return values * channels if len(values) == 1 else (sum(values) / len(values),)


def resolve_input(
    spec: str,
    data: Preprocessing,
    *,
    trained: Preprocessing | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image_size: int | None = None,
) -> Preprocessing:
    """The input model `spec` takes on this data (precedence in the module docstring).

    Args:
        spec: a model spec (zoo name, `torchvision:NAME`, `FILE.py:FUNC`, archive path).
        data: the data's own input (its channels, size and statistics).
        trained: the input recorded with the model's weights, if any.
        mean, std, image_size: explicit overrides (flags).
    Returns:
        The resolved `Preprocessing`.
    Raises:
        ValueError: for inconsistent overrides (e.g. a mean of 3 values and a std of 1).
    """
    from softlabels.models import declared_input

    chosen = data.to_dict()
    declared = declared_input(spec)
    if declared and len(declared["mean"]) == data.channels:
        chosen.update({key: value for key, value in declared.items() if value is not None})
    if trained is not None:
        chosen.update(trained.to_dict())
    flags = {"mean": mean, "std": std, "image_size": image_size}
    chosen.update({key: value for key, value in flags.items() if value is not None})
    if len(chosen["mean"]) != len(chosen["std"]):
        raise ValueError(
            f"--mean and --std need as many values each (1 or 3), got {chosen['mean']} and {chosen['std']}"
        )
    return Preprocessing.from_dict(chosen)
