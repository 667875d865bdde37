"""The `Augment` contract, and the generator every view's parameters are drawn from (`view_rng`).

An augmentation is split in two: drawing a small int32 parameter row, and making the view as an exact
function of the image and that row. The teacher pass draws the parameters of view v of a sample as the
v-th draw from `view_rng(seed, key)`, so they depend on nothing but the seed and the sample's key (not
on batch size, worker count or rank), and stores them beside the logits. Every replay runs the stored
row through the same `ViewPipeline` and gets bit-identical inputs.

Most augmentations transform one sample: they implement `sample` and `apply`. One whose views need
another sample (MixUp, CutMix: `softlabels.views.mixed`) implements `draw` and `view` instead, asking
the pipeline (a `ViewMaker`) for a partner sample and for single-sample views; the pipeline calls
`draw` and `view` of every augmentation alike.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np
import torch


class ViewMaker(Protocol):
    """What an augmentation may ask of the pipeline that makes its views (`ViewPipeline`)."""

    @property
    def image_size(self) -> int:
        """The side of the square views."""
        ...

    @property
    def partners(self) -> int:
        """How many samples a partner can be drawn from (raises when the pipeline has no dataset)."""
        ...

    def partner(self, row: int):
        """Decoded sample `row` of the dataset (the partner of a view that mixes two samples)."""
        ...

    def extent(self, x) -> tuple[int, int]:
        """(height, width) a decoded sample's parameters are drawn for ((0, 0) for tensor samples)."""
        ...

    def make(self, x, params, augment: Augment) -> torch.Tensor:
        """The view of decoded `x` under a one-sample augmentation's `apply`, at the input size."""
        ...


class Augment:
    """One augmentation: parameters are drawn once, and the view is an exact function of them.

    Subclass it for an augmentation of your own (`--augment FILE.py:NAME`): `param_names` names the
    parameters, `param_dtypes` says which are "float32" (default: all "int32"); `sample` returns
    one value per parameter; `apply(x, params, image_size)` gets them back exactly. Parameters are
    stored as int32 columns (float32 ones bit for bit: read them with `.view(np.float32)`).

    `resizes`: the augmentation makes the input size itself from the whole decoded image (a random
    resized crop), so an eval transform's resize and centre crop do not apply before it.
    `takes_uint8`: `apply` works on uint8 pixels as well as on float [0, 1] ones (the built-ins: pads,
    crops, flips and resizes); a user's augmentation gets float [0, 1] unless it says so.
    `mixes`: a view mixes two samples, so it has no single label (only a teacher can label it).
    """

    name: str = ""
    param_names: tuple[str, ...] = ()
    param_dtypes: tuple[str, ...] = ()  # per parameter "int32" or "float32"; empty: all int32
    description: str = ""
    resizes: bool = False
    takes_uint8: bool = False
    mixes: bool = False

    def sample(self, rng: np.random.Generator, height: int, width: int, image_size: int):
        """Parameters of one view of an image of `height` x `width`: one value per parameter."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, params, image_size: int) -> torch.Tensor:
        """The view of float (C, H, W) `x` (un-normalised) that `params` describe."""
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, x, maker: ViewMaker) -> np.ndarray:
        """The stored int32 (P,) row of one view of decoded `x`: the next draw from the sample's `rng`."""
        return self.encode(self.sample(rng, *maker.extent(x), maker.image_size))

    def view(self, x, row, maker: ViewMaker) -> torch.Tensor:
        """The view of decoded `x` that the stored `row` describes, at the input size."""
        return maker.make(x, row, self)

    def encode(self, values) -> np.ndarray:
        """One view's parameters as the stored int32 (P,) row (float32 values bit for bit)."""
        values = np.asarray(values).reshape(-1)
        if not any(d == "float32" for d in self.param_dtypes):
            return values.astype(np.int32)
        return np.array(
            [
                np.float32(v).view(np.int32) if d == "float32" else np.int32(v)
                for v, d in zip(values, self.param_dtypes)
            ],
            dtype=np.int32,
        )

    def decode(self, row) -> tuple:
        """A stored int32 row back as the values `sample` drew."""
        row = np.asarray(row, dtype=np.int32).reshape(-1)
        if not any(d == "float32" for d in self.param_dtypes):
            return tuple(int(v) for v in row)
        return tuple(float(v.view(np.float32)) if d == "float32" else int(v) for v, d in zip(row, self.param_dtypes))

    def identity(self) -> dict:
        """What names this augmentation exactly, beyond its name (user code: its source and repr)."""
        return {}

    def _unpack(self, params) -> tuple[int, ...]:
        values = tuple(int(v) for v in np.asarray(params).reshape(-1))
        if len(values) != len(self.param_names):
            raise ValueError(
                f"augment {self.name!r} takes {len(self.param_names)} parameters "
                f"({', '.join(self.param_names) or 'none'}), got {len(values)}"
            )
        return values

    def _out_of_bounds(self, params, height: int, width: int) -> ValueError:
        return ValueError(
            f"augment {self.name!r} parameters {dict(zip(self.param_names, params))} do not fit "
            f"a {height}x{width} image (were they drawn for another image size?)"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, params={self.param_names})"


def view_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one sample's views: a function of (seed, key) alone, the same on every machine."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype="<u4").tolist())


def random_view_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of a random (uncached) view: a function of (seed, epoch, sample index) alone."""
    return np.random.default_rng([int(seed), epoch, index, 0xA06])
