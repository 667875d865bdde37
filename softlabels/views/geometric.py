"""The built-in augmentations, one class each, and their registry `AUGMENTS` (by name).

All of them move pixels (pad, crop, flip, resize) and so take uint8 pixels as well as float [0, 1]
ones; `docs/FORMAT.md` lists each one's stored parameters.
"""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F

from softlabels.views.augment import Augment
from softlabels.views.pixels import resize


def _params(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int32)


class NoAugment(Augment):
    name = "none"
    takes_uint8 = True
    param_names = ()
    description = "the plain image (one view)"

    def sample(self, rng, height, width, image_size):
        return _params()

    def apply(self, x, params, image_size):
        self._unpack(params)
        return x


class Flip(Augment):
    name = "flip"
    takes_uint8 = True
    param_names = ("flip",)
    description = "horizontal flip with probability 1/2"

    def sample(self, rng, height, width, image_size):
        return _params(rng.integers(0, 2))

    def apply(self, x, params, image_size):
        (flip,) = self._unpack(params)
        return x.flip(-1) if flip else x


class CifarCrop(Augment):
    """torchvision's RandomCrop(size=(H, W), padding=4) (zero fill) then RandomHorizontalFlip."""

    name = "cifar"
    takes_uint8 = True
    param_names = ("top", "left", "flip")
    description = "random crop of the image padded by 4 black pixels, then horizontal flip with p=1/2"
    padding = 4

    def sample(self, rng, height, width, image_size):
        top = rng.integers(0, 2 * self.padding + 1)
        left = rng.integers(0, 2 * self.padding + 1)
        return _params(top, left, rng.integers(0, 2))

    def apply(self, x, params, image_size):
        top, left, flip = self._unpack(params)
        height, width = x.shape[-2:]
        if not (0 <= top <= 2 * self.padding and 0 <= left <= 2 * self.padding):
            raise self._out_of_bounds((top, left, flip), height, width)
        pad = self.padding
        x = F.pad(x, (pad, pad, pad, pad))[..., top : top + height, left : left + width]
        return x.flip(-1) if flip else x


class ImagenetCrop(Augment):
    """torchvision's RandomResizedCrop(image_size, scale=(0.08, 1), ratio=(3/4, 4/3)) then flip.

    Same sampling algorithm as `RandomResizedCrop.get_params` (ten tries, then the central-crop
    fallback), drawing from a numpy generator instead of torch's global one.
    """

    name = "imagenet"
    takes_uint8 = True
    resizes = True
    param_names = ("top", "left", "height", "width", "flip")
    description = "random resized crop (scale 0.08-1, ratio 3/4-4/3) to the image size, then horizontal flip with p=1/2"
    scale = (0.08, 1.0)
    ratio = (3 / 4, 4 / 3)

    def sample(self, rng, height, width, image_size):
        top, left, h, w = self._crop(rng, height, width)
        return _params(top, left, h, w, rng.integers(0, 2))

    def _crop(self, rng, height: int, width: int) -> tuple[int, int, int, int]:
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect_ratio = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def apply(self, x, params, image_size):
        top, left, h, w, flip = self._unpack(params)
        height, width = x.shape[-2:]
        if not (0 <= top and 0 <= left and 0 < h and 0 < w and top + h <= height and left + w <= width):
            raise self._out_of_bounds((top, left, h, w, flip), height, width)
        x = resize(x[..., top : top + h, left : left + w], image_size, image_size)
        return x.flip(-1) if flip else x


AUGMENTS: dict[str, Augment] = {augment.name: augment for augment in (NoAugment(), Flip(), CifarCrop(), ImagenetCrop())}
