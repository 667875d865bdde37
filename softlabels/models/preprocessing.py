"""`Preprocessing`: what a model takes as input (channels, size, resize and crop, interpolation,
normalisation), recorded in every cache and every trainer checkpoint, and the published statistics
several sources share. No torch here: the store reads and writes this record.

Caches without `resize` keep the meaning of format version 1 (a bilinear resize of the shorter side
straight to the crop size). Which input a model takes is decided by `softlabels.models.inputs`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# ImageNet's statistics: the CIFAR ResNet checkpoints', and image folders' defaults.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Grey images: the ImageNet statistics averaged over channels (as timm does for 1-channel inputs).
IMAGENET_GREY_MEAN, IMAGENET_GREY_STD = (0.449,), (0.226,)
STATISTICS = ("mean", "std")  # what normalises the views; every other field makes them (`geometry`)

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
    def geometry(self) -> dict:
        """What makes the views, as opposed to what normalises them: every field but the statistics,
        and the channel count. Models with the same geometry see the same views."""
        return {"channels": self.channels, **{k: v for k, v in self.to_dict().items() if k not in STATISTICS}}

    def with_statistics(self, mean: tuple[float, ...], std: tuple[float, ...]) -> Preprocessing:
        """The same views, normalised with other statistics."""
        return replace(self, mean=mean, std=std)

    def fit_channels(self, channels: int) -> Preprocessing:
        """These statistics for `channels` channels: grey ones repeated, RGB ones averaged."""
        return self.with_statistics(fit_statistics(self.mean, channels), fit_statistics(self.std, channels))

    def transform_text(self) -> str:
        """How the views are made and normalised, in words (`softlabels info`)."""
        if not self.is_image:
            return self.describe()
        size = self.image_size
        if self.resize is None:
            steps = f"shorter side resized to {size} (bilinear), centre crop {size}"
        else:
            crop = f"{size / self.resize:.1%}".replace(".0%", "%")
            how = self.interpolation or "bilinear"
            steps = f"shorter side resized to {self.resize} ({how}), centre crop {size} ({crop} of it)"
        numbers = ", ".join(f"{v:g}" for v in self.mean), ", ".join(f"{v:g}" for v in self.std)
        return f"{self.describe()}: {steps}; mean ({numbers[0]}), std ({numbers[1]})"

    @property
    def model_geometry(self) -> tuple[int, int]:
        """(in_channels, image_size) a model is built for: a tensor sample's flat size counts as channels
        of a 1x1 image, so zoo `linear` and `mlp` take feature vectors of any length."""
        return (self.features or 1, 1) if not self.is_image else (self.channels, self.image_size)


def fit_statistics(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Per-channel statistics for `channels` channels: grey ones repeated, RGB ones averaged."""
    if len(values) == channels:
        return values
    return values * channels if len(values) == 1 else (sum(values) / len(values),)


def input_text(record: dict) -> str:
    """A recorded input (a cache's `preprocessing` attribute) in words; the raw fields where it does
    not parse (a cache from a newer writer)."""
    try:
        return Preprocessing.from_dict(record).transform_text()
    except (KeyError, TypeError, ValueError):
        return ", ".join(f"{k}={v}" for k, v in sorted(record.items()))
