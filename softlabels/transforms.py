"""Parametrised augmentations and the pixel operations of a view (used by `softlabels.pipeline`).

An augmentation is split in two: `sample` draws a small int32 parameter vector, `apply` is an exact
function of the image and those parameters. The teacher pass draws the parameters of view v of a
sample as the v-th draw from `view_rng(seed, key)`, so they depend on nothing but the seed and the
sample's key (not on batch size, worker count or rank), and stores them beside the logits. The
trainer replays the stored parameters through the same pipeline and gets bit-identical inputs.

Everything here works on float (C, H, W) tensors in [0, 1]; normalisation comes after, on the device
(`softlabels.pipeline.Normalize`), so padding is black, as with torchvision's RandomCrop before Normalize.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF


def to_pixels(img: Image.Image, channels: int) -> torch.Tensor:
    """A PIL image as uint8 (C, H, W), converted to grey ("L") or "RGB" to match `channels`."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    return TF.pil_to_tensor(img)


def to_tensor(img: Image.Image, channels: int) -> torch.Tensor:
    """A PIL image as float32 (C, H, W) in [0, 1], converted to grey ("L") or "RGB" to match `channels`."""
    return to_pixels(img, channels).to(torch.float32).div_(255)


def eval_fit(img: Image.Image, channels: int, resize: int, size: int, interpolation: str | None) -> Image.Image:
    """A published eval transform's geometry on a decoded image, as timm's and torchvision's do it on
    PIL images: shorter side to `resize` (PIL's resampling, antialiased), then a centre crop of `size`."""
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    img = TF.resize(img, [resize], interpolation=TF.InterpolationMode(interpolation or "bilinear"), antialias=True)
    return TF.center_crop(img, [size, size])


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return TF.resize(x, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def fit_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bring (..., C, H, W) to `size` x `size`: shorter side to `size`, then centre crop (only when the
    size differs). Deterministic: the same input gives the same bits."""
    height, width = x.shape[-2:]
    if (height, width) != (size, size):
        short, long = sorted((height, width))
        long = int(size * long / short)  # torchvision's Resize(int) rule
        x = _resize(x, *((size, long) if height <= width else (long, size)))
        x = TF.center_crop(x, [size, size])
    return x


class Augment:
    """One augmentation: `sample` draws parameters, `apply` is an exact function of them.

    Subclass it for an augmentation of your own (`--augment FILE.py:NAME`): `param_names` names the
    parameters, `param_dtypes` says which are "float32" (default: all "int32"); `sample` returns
    one value per parameter; `apply(x, params, image_size)` gets them back exactly. Parameters are
    stored as int32 columns (float32 ones bit for bit: read them with `.view(np.float32)`).

    `resizes`: the augmentation makes the input size itself from the whole decoded image (a random
    resized crop), so an eval transform's resize and centre crop do not apply before it.
    `takes_uint8`: `apply` works on uint8 pixels as well as on float [0, 1] ones (the built-ins: pads,
    crops, flips and resizes); a user's augmentation gets float [0, 1] unless it says so.
    """

    name: str = ""
    param_names: tuple[str, ...] = ()
    param_dtypes: tuple[str, ...] = ()  # per parameter "int32" or "float32"; empty: all int32
    description: str = ""
    resizes: bool = False
    takes_uint8: bool = False
    mixes: bool = False  # views mix two samples (`softlabels.mixing`): the pipeline loads the partner

    def sample(self, rng: np.random.Generator, height: int, width: int, image_size: int):
        """Parameters of one view of an image of `height` x `width`: one value per parameter."""
        raise NotImplementedError

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

    def apply(self, x: torch.Tensor, params, image_size: int) -> torch.Tensor:
        """The view of float (C, H, W) `x` (un-normalised) that `params` describe."""
        raise NotImplementedError

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
        x = _resize(x[..., top : top + h, left : left + w], image_size, image_size)
        return x.flip(-1) if flip else x


AUGMENTS: dict[str, Augment] = {augment.name: augment for augment in (NoAugment(), Flip(), CifarCrop(), ImagenetCrop())}


def get_augment(name: str | Augment) -> Augment:
    """A built-in augmentation by name, or a user's (`FILE.py:NAME`, `softlabels.user_augments`)."""
    if isinstance(name, Augment):
        return name
    if name in AUGMENTS:
        return AUGMENTS[name]
    from softlabels.user_augments import is_user_spec, load_user_augment

    if is_user_spec(name):
        return load_user_augment(name)
    from softlabels.mixing import parse_mixed

    mixed = parse_mixed(name)
    if mixed is not None:
        return mixed
    raise ValueError(
        f"unknown augment {name!r}; choose one of: {', '.join(AUGMENTS)}, BASE+mixup[:ALPHA], BASE+cutmix[:ALPHA], "
        f"or FILE.py:NAME"
    ) from None


def view_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one sample's views: a function of (seed, key) alone, the same on every machine."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype="<u4").tolist())


def sample_views(
    augment: str | Augment, seed: int, key: str, views: int, height: int, width: int, image_size: int
) -> np.ndarray:
    """Parameters of `views` views of the sample `key` as int32 (V, P): view v is the v-th draw."""
    augment = get_augment(augment)
    if views < 1:
        raise ValueError(f"views must be at least 1, got {views}")
    rng = view_rng(seed, key)
    drawn = [augment.encode(augment.sample(rng, height, width, image_size)) for _ in range(views)]
    return np.stack(drawn).astype(np.int32, copy=False).reshape(views, len(augment.param_names))
