"""One path from a sample to network input, shared by the teacher pass, `verify --recompute`, the
trainer and users' own loops:

    decode  ->  view (stored parameters replayed, or freshly drawn)  ->  fit to the input size
            ->  float32 [0, 1]  ->  (on the device, batched) normalise with `Normalize`

Inputs with `pixels = "uint8"` (every input resolved since it exists) crop and resize the decoded
uint8 pixels and convert to float last, as torchvision's fast path does; inputs without it (caches
of format 1) resample float32 pixels, so their stored views replay bit for bit.

Mixed views (`BASE+mixup`, `BASE+cutmix`: `softlabels.mixing`) make the BASE view of the sample
and of a partner sample (loaded from `source` by its row), then mix them.

`ViewPipeline` does the first three on the CPU (DataLoader workers) and hands out un-normalised
float32 [0, 1] views; each model normalises its own batch on its device (`Normalize`), so online KD
can feed one batch to a teacher and a student that expect different statistics. A view is an exact
function of the decoded sample and its parameters: the teacher pass and every replay get the same
bits.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from softlabels.data.sample_errors import reading
from softlabels.mixing import Mixed
from softlabels.models.preprocessing import Preprocessing
from softlabels.transforms import Augment, eval_fit, fit_size, get_augment, sample_views, to_pixels, view_rng


class ViewPipeline:
    """Views of samples for a model input (`prep`: channels and size) under one augmentation; mixed
    views also load their partner samples from `source`."""

    def __init__(self, prep: Preprocessing, augment: str | Augment = "none", source=None):
        self.prep = prep
        self.augment = get_augment(augment)
        self.source = source
        if not prep.is_image and (self.augment.takes_uint8 or self.augment.mixes) and self.augment.name != "none":
            raise ValueError(
                f"augment {self.augment.name} works on images; tensor samples take none or a "
                f"FILE.py:NAME augmentation of your own"
            )

    def decode(self, sample) -> torch.Tensor:
        """A decoded sample (a PIL image) as (C, H, W) with the input's channels: uint8 pixels, or
        float32 in [0, 1] for inputs that resample float32 (format 1).

        With an eval transform (`prep.resize`), the image is first resized and centre-cropped as
        timm's and torchvision's eval transforms do it, unless the augmentation makes the size itself.
        """
        prep = self.prep
        if not prep.is_image:
            return sample  # a tensor (or a dict of them), bit for bit
        if prep.resize is not None and not self.augment.resizes:
            sample = eval_fit(sample, prep.channels, prep.resize, prep.image_size, prep.interpolation)
        pixels = to_pixels(sample, prep.channels)
        return pixels if prep.pixels == "uint8" else pixels.to(torch.float32).div_(255)

    def view(self, x: torch.Tensor, params) -> torch.Tensor:
        """The view of decoded `x` that `params` (P,) describe: float32 (C, S, S) in [0, 1] (a tensor
        sample: the augmentation's output, or the sample itself)."""
        mixed = self.augment
        if isinstance(mixed, Mixed):
            own, partner, theirs, how = mixed.split(params)
            other = self._single(self._partner(partner), theirs, mixed.base)
            return mixed.mix(self._single(x, own, mixed.base), other, how)
        return self._single(x, params, self.augment)

    def _single(self, x: torch.Tensor, params, augment: Augment) -> torch.Tensor:
        if not self.prep.is_image:
            return augment.apply(x, params, 0)
        if x.shape[-3] != self.prep.channels:
            raise ValueError(f"image has {x.shape[-3]} channels but the input expects {self.prep.channels}")
        if x.dtype == torch.uint8 and not augment.takes_uint8:
            x = x.to(torch.float32).div_(255)
        y = fit_size(augment.apply(x, params, self.prep.image_size), self.prep.image_size)
        return y.to(torch.float32).div_(255) if y.dtype == torch.uint8 else y

    def _partner(self, row: int) -> torch.Tensor:
        """Decoded sample `row` of `source`: the partner of a mixed view."""
        if self.source is None:
            raise ValueError(f"{self.augment.name} views mix two samples: the pipeline needs the dataset (source=)")
        if not 0 <= row < len(self.source):
            raise ValueError(f"a mixed view names partner row {row}, but the dataset has {len(self.source)} samples")
        with reading(self.source, row):
            return self.decode(self.source.load(row))

    def views(self, x: torch.Tensor, params) -> torch.Tensor:
        """(V, C, S, S) views of decoded `x` for (V, P) parameters."""
        params = np.asarray(params)
        if params.ndim != 2:
            raise ValueError(f"views need (views, parameters) params, got shape {params.shape}")
        return stack([self.view(x, row) for row in params])

    def stored_params(self, x, seed: int, key: str, num_views: int) -> np.ndarray:
        """The (V, P) parameters of a sample's stored views: a function of (seed, key) alone (and, for
        mixed views, of the dataset the partners are drawn from)."""
        height, width = _extent(x, self.prep)
        if isinstance(self.augment, Mixed):
            return self._mixed_params(self.augment, seed, key, num_views, height, width)
        return sample_views(self.augment, seed, key, num_views, height, width, self.prep.image_size)

    def _mixed_params(self, mixed: Mixed, seed: int, key: str, num_views: int, height: int, width: int) -> np.ndarray:
        size, rng, base = self.prep.image_size, view_rng(seed, key), mixed.base
        if self.source is None:
            raise ValueError(f"{mixed.name} views mix two samples: the pipeline needs the dataset (source=)")
        rows = []
        for _ in range(num_views):
            own = base.encode(base.sample(rng, height, width, size))
            partner = int(rng.integers(0, len(self.source)))
            other = self._partner(partner)
            theirs = base.encode(base.sample(rng, *_extent(other, self.prep), size))
            rows.append(mixed.join(own, partner, theirs, mixed.sample_mix(rng, size)))
        return np.stack(rows).astype(np.int32, copy=False)

    def check_replay(self, x: torch.Tensor, params) -> None:
        """Refuse an augmentation whose view is not a function of its parameters (two runs differ)."""
        first, again = self.view(x, params), self.view(_clone(x), np.array(params, copy=True))
        if not same(first, again):
            raise ValueError(
                f"augment {self.augment.name} is not deterministic under a fixed seed: two runs of one "
                f"view differ, so its views could not be replayed (does it draw from an unseeded "
                f"generator?)"
            )

    def random_view(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A freshly drawn (uncached) view."""
        if self.augment.mixes:
            raise ValueError(
                f"{self.augment.name} makes mixed views for a cache, where the teacher labels the mixed image: "
                f"build one (softlabels build --views V --augment {self.augment.name}); a random mixed view has "
                f"no label to learn"
            )
        height, width = _extent(x, self.prep)
        return self.view(x, self.augment.encode(self.augment.sample(rng, height, width, self.prep.image_size)))


def _extent(x, prep: Preprocessing) -> tuple[int, int]:
    """(height, width) an augmentation draws for: an image's; (0, 0) for tensor samples."""
    return (x.shape[-2], x.shape[-1]) if prep.is_image else (0, 0)


def _clone(x):
    return {k: _clone(v) for k, v in x.items()} if isinstance(x, dict) else x.clone()


def stack(items: list):
    """Stack tensors, or dicts of tensors key by key (a batch of tensor samples)."""
    if isinstance(items[0], dict):
        return {key: stack([item[key] for item in items]) for key in items[0]}
    return torch.stack(items)


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def flatten_views(x):
    """(B, V, ...) -> (B * V, ...), for a tensor or each tensor of a dict."""
    return {k: flatten_views(v) for k, v in x.items()} if isinstance(x, dict) else x.flatten(0, 1)


def to_device(x, device: torch.device, dtype: torch.dtype | None = None):
    """A batch on the device: images (4-D) in channels_last; tensor samples and dicts as they are, but
    floating ones in `dtype` when given (a float32 student on float64 features)."""
    if isinstance(x, dict):
        return {k: to_device(v, device, dtype) for k, v in x.items()}
    x = x.to(device, non_blocking=True)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 and x.is_floating_point() else x


class Normalize(nn.Module):
    """(x - mean) / std on (N, C, H, W) batches: the one place inputs are normalised. Tensor samples
    (a `sample = "tensor"` input) pass through unchanged."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, prep: Preprocessing):
        super().__init__()
        self.identity = not prep.is_image
        self.register_buffer("mean", torch.tensor(prep.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(prep.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        if self.identity:
            return x
        return (x - self.mean) / self.std
