"""What a model takes as input, and the one place that decides it (`resolve_input`).

`Preprocessing` is a model's input: the channel count (the length of `mean`), the square size, the
normalisation and, for published eval transforms (timm, torchvision weights), the shorter-side
resize before the centre crop and its interpolation. It is recorded in every cache and every
trainer checkpoint; caches without `resize` keep the meaning of format version 1 (a bilinear
resize of the shorter side straight to the crop size). `resolve_input`
answers "what input does this model take here?" for every caller: the teacher pass, online KD,
students and `verify --recompute`. Precedence, field by field:

1. flags (`--mean`, `--std`, `--image-size`);
2. what the weights were trained with, when they record it (checkpoints written by `trainer fit`);
3. what the model declares: a zoo entry's published statistics, when its channel count matches the
   data's (RGB statistics do not fit grey images); the eval transform of timm and torchvision
   weights (their channels, size, resize, interpolation and statistics; grey images become RGB);
4. the data's own defaults (channels, size and statistics of the dataset).

When the views are given (a student learning from a cache, or beside an online teacher), only
the statistics may come from the model: channels and size are the views'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


@dataclass(frozen=True)
class Preprocessing:
    """A model's input: size and normalisation; len(mean) is the channel count."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    resize: int | None = None  # shorter side before the centre crop (None: straight to image_size, bilinear)
    interpolation: str | None = None  # of that resize (None: bilinear)
    pixels: str | None = None  # "uint8": crops and resizes on uint8 pixels (None: on float32, format 1's way)
    sample: str | None = None  # "tensor": samples are tensors (or dicts of them) fed as they are; None: images
    features: int | None = None  # tensor samples: their flat size (what zoo linear/mlp students take)

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "image_size", int(self.image_size))
        if self.resize is not None:
            object.__setattr__(self, "resize", int(self.resize))
            if self.resize < self.image_size:
                raise ValueError(f"resize ({self.resize}) must be at least the image size ({self.image_size})")
        if self.sample not in (None, "tensor"):
            raise ValueError(f"sample must be tensor or absent (images), got {self.sample!r}")
        if self.pixels not in (None, "uint8"):
            raise ValueError(f"pixels must be uint8 or absent (float32 resampling), got {self.pixels!r}")
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; choose: {', '.join(INTERPOLATIONS)}")
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

    @property
    def eval_resize(self) -> bool:
        """True for a published eval transform: resize the decoded image (as PIL does), then crop."""
        return self.resize is not None

    def to_dict(self) -> dict:
        """The JSON form; `resize` and `interpolation` only when set (version-1 readers see no change)."""
        out = {"mean": list(self.mean), "std": list(self.std), "image_size": self.image_size}
        optional = (
            ("resize", self.resize),
            ("interpolation", self.interpolation),
            ("pixels", self.pixels),
            ("sample", self.sample),
            ("features", self.features),
        )
        out.update({k: v for k, v in optional if v is not None})
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        return cls(
            tuple(d["mean"]),
            tuple(d["std"]),
            int(d["image_size"]),
            d.get("resize"),
            d.get("interpolation"),
            d.get("pixels"),
            d.get("sample"),
            d.get("features"),
        )

    @property
    def is_image(self) -> bool:
        return self.sample is None

    def describe(self) -> str:
        if not self.is_image:
            return "tensor" + (f" ({self.features} values)" if self.features else "")
        return f"{self.channels}x{self.image_size}x{self.image_size}"

    @property
    def model_geometry(self) -> tuple[int, int]:
        """(in_channels, image_size) a model is built for: a tensor sample's flat size counts as channels
        of a 1x1 image, so zoo `linear` and `mlp` take feature vectors of any length."""
        return (self.features or 1, 1) if not self.is_image else (self.channels, self.image_size)


def data_input(defaults: dict, channels: int | None = None, image_size: int | None = None) -> Preprocessing:
    """A dataset's defaults (`DatasetSource.defaults`) as an input, optionally for another channel count
    (grey statistics repeated, RGB averaged) or size."""
    mean, std = tuple(defaults["mean"]), tuple(defaults["std"])
    if defaults.get("sample") == "tensor":
        return Preprocessing(mean, std, 1, sample="tensor", features=defaults.get("features"))
    channels = channels or len(mean)
    return Preprocessing(
        _fit(mean, channels), _fit(std, channels), image_size or defaults["image_size"], pixels="uint8"
    )


def _fit(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    if len(values) == channels:
        return values
    return values * channels if len(values) == 1 else (sum(values) / len(values),)


def resolve_input(
    spec: str,
    data: Preprocessing,
    *,
    weights: str | None = None,
    trained: Preprocessing | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image_size: int | None = None,
    views_given: bool = False,
) -> Preprocessing:
    """The input model `spec` takes on this data (precedence in the module docstring).

    Args:
        spec: a model spec (zoo name, `timm:NAME`, `torchvision:NAME`, `FILE.py:FUNC`, archive path).
        data: the data's own input (its channels, size and statistics), or the given views'.
        weights: the `--weights` value (named weights such as `DEFAULT` declare their own transform).
        trained: the input recorded with the model's weights, if any.
        mean, std, image_size: explicit overrides (flags).
        views_given: the views are fixed (channels and size are the data's; only statistics resolve).
    Returns:
        The resolved `Preprocessing`.
    Raises:
        ValueError: for inconsistent overrides (e.g. a mean of 3 values and a std of 1).
    """
    from softlabels.models import declared_input

    chosen = data.to_dict()
    declared = declared_input(spec, weights, data.channels)
    if declared:
        chosen.update({key: value for key, value in declared.items() if value is not None})
    if trained is not None:
        chosen.update(trained.to_dict())
    if not data.is_image:  # tensor samples are fed as they are: no geometry or statistics to resolve
        return data
    if views_given:  # the views' geometry stays; only statistics that fit their channels may change
        if len(chosen["mean"]) != data.channels:
            chosen.update(mean=data.mean, std=data.std)
        chosen.update(
            image_size=data.image_size, resize=data.resize, interpolation=data.interpolation, pixels=data.pixels
        )
    flags = {"mean": mean, "std": std, "image_size": image_size}
    chosen.update({key: value for key, value in flags.items() if value is not None})
    if len(chosen["mean"]) != len(chosen["std"]):
        raise ValueError(f"--mean and --std need as many values (1 or 3), got {chosen['mean']} and {chosen['std']}")
    if chosen.get("resize") is not None and chosen["resize"] < chosen["image_size"]:
        chosen["resize"] = chosen["image_size"]  # --image-size above the declared resize: no up-then-crop
    return Preprocessing.from_dict(chosen)
