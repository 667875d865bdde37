"""One path from a sample to network input, shared by the teacher pass, `verify --recompute`, the
trainer and users' own loops:

    decode  ->  view (stored parameters replayed, or freshly drawn)  ->  fit to the input size
            ->  float32 [0, 1]  ->  (on the device, batched) normalise with `Normalize`

Inputs with `pixels = "uint8"` (every input resolved since it exists) crop and resize the decoded
uint8 pixels and convert to float last, as torchvision's fast path does; inputs without it (caches
of format 1) resample float32 pixels, so their stored views replay bit for bit.

The pipeline calls every augmentation's `draw` and `view` alike; it is their `ViewMaker`: it makes
one-sample views (`make`) and loads partner samples from `source` for views that mix two samples.

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
from softlabels.models.preprocessing import Preprocessing
from softlabels.views.augment import Augment, random_view_rng, view_rng
from softlabels.views.geometric import AUGMENTS
from softlabels.views.pixels import eval_fit, fit_size, to_float, to_pixels


class ViewPipeline:
    """Views of samples for a model input (`prep`: channels and size) under one augmentation (an
    `Augment`: `softlabels.views.parse_augment` makes one from text); views that mix two samples
    load their partners from `source`."""

    def __init__(self, prep: Preprocessing, augment: Augment = AUGMENTS["none"], source=None):
        if not isinstance(augment, Augment):
            raise TypeError(f"ViewPipeline takes an Augment, got {augment!r}: make one with views.parse_augment")
        self.prep = prep
        self.augment = augment
        self.source = source
        if not prep.is_image and (augment.takes_uint8 or augment.mixes) and augment.name != "none":
            raise ValueError(
                f"augment {augment.name} works on images; tensor samples take none or a "
                f"FILE.py:NAME augmentation of your own"
            )

    @property
    def image_size(self) -> int:
        return self.prep.image_size

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
        return pixels if prep.pixels == "uint8" else to_float(pixels)

    def view(self, x: torch.Tensor, params) -> torch.Tensor:
        """The view of decoded `x` that `params` (P,) describe: float32 (C, S, S) in [0, 1] (a tensor
        sample: the augmentation's output, or the sample itself)."""
        return self.augment.view(x, params, self)

    def make(self, x: torch.Tensor, params, augment: Augment) -> torch.Tensor:
        """The view of decoded `x` under a one-sample augmentation's `apply`, at the input size."""
        if not self.prep.is_image:
            return augment.apply(x, params, 0)
        if x.shape[-3] != self.prep.channels:
            raise ValueError(f"image has {x.shape[-3]} channels but the input expects {self.prep.channels}")
        if x.dtype == torch.uint8 and not augment.takes_uint8:
            x = to_float(x)
        return to_float(fit_size(augment.apply(x, params, self.prep.image_size), self.prep.image_size))

    @property
    def partners(self) -> int:
        """How many samples `source` holds (the rows a partner is drawn from)."""
        if self.source is None:
            raise ValueError(f"{self.augment.name} views mix two samples: the pipeline needs the dataset (source=)")
        return len(self.source)

    def partner(self, row: int) -> torch.Tensor:
        """Decoded sample `row` of `source`: the partner of a mixed view."""
        if not 0 <= row < self.partners:
            raise ValueError(f"a mixed view names partner row {row}, but the dataset has {len(self.source)} samples")
        with reading(self.source, row):
            return self.decode(self.source.load(row))

    def extent(self, x) -> tuple[int, int]:
        """(height, width) an augmentation draws for: an image's; (0, 0) for tensor samples."""
        return (x.shape[-2], x.shape[-1]) if self.prep.is_image else (0, 0)

    def views(self, x: torch.Tensor, params) -> torch.Tensor:
        """(V, C, S, S) views of decoded `x` for (V, P) parameters."""
        params = np.asarray(params)
        if params.ndim != 2:
            raise ValueError(f"views need (views, parameters) params, got shape {params.shape}")
        return stack([self.view(x, row) for row in params])

    def stored_params(self, x, seed: int, key: str, num_views: int) -> np.ndarray:
        """The (V, P) parameters of a sample's stored views: view v is the v-th draw from
        `view_rng(seed, key)` (and, for mixed views, depends on the dataset partners are drawn from)."""
        if num_views < 1:
            raise ValueError(f"views must be at least 1, got {num_views}")
        rng = view_rng(seed, key)
        rows = [self.augment.draw(rng, x, self) for _ in range(num_views)]
        return np.stack(rows).astype(np.int32, copy=False).reshape(num_views, len(self.augment.param_names))

    def random_view(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A freshly drawn (uncached) view."""
        if self.augment.mixes:  # no single label: only a teacher labelling the mixed image can teach it
            raise ValueError(
                f"{self.augment.name} makes mixed views for a cache, where the teacher labels the mixed image: "
                f"build one (softlabels build --views V --augment {self.augment.name}); a random mixed view has "
                f"no label to learn"
            )
        return self.view(x, self.augment.draw(rng, x, self))


def random_view(pipeline: ViewPipeline, x: torch.Tensor, seed: int, index: int, epoch: int) -> torch.Tensor:
    """A random (uncached) view, from a generator seeded by (seed, epoch, sample index)."""
    return pipeline.random_view(x, random_view_rng(seed, epoch, index))


def stack(items: list):
    """Stack tensors, or dicts of tensors key by key (a batch of tensor samples)."""
    if isinstance(items[0], dict):
        return {key: stack([item[key] for item in items]) for key in items[0]}
    return torch.stack(items)


def nonfinite_rows(x) -> list[int]:
    """The rows (first axis) of a batch, a tensor or a dict of tensors, holding NaN or inf."""
    tensors = x.values() if isinstance(x, dict) else [x]
    bad = torch.zeros(len(next(iter(tensors))), dtype=torch.bool)
    for tensor in tensors:
        if tensor.is_floating_point():
            bad |= ~torch.isfinite(tensor.detach()).flatten(1).all(dim=1).cpu()
    return torch.nonzero(bad).flatten().tolist()


def same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def flatten_views(x):
    """(B, V, ...) -> (B * V, ...), for a tensor or each tensor of a dict."""
    return {k: flatten_views(v) for k, v in x.items()} if isinstance(x, dict) else x.flatten(0, 1)


def to_device(x, device: torch.device, dtype: torch.dtype | None = None, channels_last: bool = True):
    """A batch on the device: images (4-D) in channels_last (unless `channels_last` is False: the
    loader's layout); tensor samples and dicts as they are, but floating ones in `dtype` when given
    (a float32 student on float64 features)."""
    if isinstance(x, dict):
        return {k: to_device(v, device, dtype, channels_last) for k, v in x.items()}
    x = x.to(device, non_blocking=True)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    return to_channels_last(x) if channels_last else x


def to_channels_last(x):
    """Images (4-D floating) in channels_last; anything else as it is."""
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
