"""The pixel operations of a view: a decoded image as uint8 or float (C, H, W), a published eval
transform's resize and centre crop, and bringing a view to the input size.

Views are float (C, H, W) tensors in [0, 1] (or uint8 pixels, converted last); normalisation comes
after, on the device (`softlabels.views.Normalize`), so padding is black, as with torchvision's
RandomCrop before Normalize. Every operation is deterministic: the same input gives the same bits.
"""

from __future__ import annotations

import torch
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


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as float32 in [0, 1]; float views as they are."""
    return x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x


def eval_fit(img: Image.Image, channels: int, resize: int, size: int, interpolation: str | None) -> Image.Image:
    """A published eval transform's geometry on a decoded image, as timm's and torchvision's do it on
    PIL images: shorter side to `resize` (PIL's resampling, antialiased), then a centre crop of `size`."""
    mode = "L" if channels == 1 else "RGB"
    if img.mode != mode:
        img = img.convert(mode)
    img = TF.resize(img, [resize], interpolation=TF.InterpolationMode(interpolation or "bilinear"), antialias=True)
    return TF.center_crop(img, [size, size])


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., C, H, W) resampled (bilinear, antialiased) to `height` x `width`, unless already that size."""
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return TF.resize(x, [height, width], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def fit_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bring (..., C, H, W) to `size` x `size`: shorter side to `size`, then centre crop (only when the
    size differs)."""
    height, width = x.shape[-2:]
    if (height, width) != (size, size):
        short, long = sorted((height, width))
        long = int(size * long / short)  # torchvision's Resize(int) rule
        x = resize(x, *((size, long) if height <= width else (long, size)))
        x = TF.center_crop(x, [size, size])
    return x
