"""What every model source provides: which specs it claims, how it builds a module, what input its
published weights expect. One subclass per source, in its own file, listed in `models.SOURCES`."""

from __future__ import annotations

from typing import ClassVar

from torch import nn


class ModelSource:
    """A kind of model spec (`zoo name`, `torchvision:NAME`, `FILE.py:FUNC`, archive path, ...)."""

    name: ClassVar[str] = ""
    form: ClassVar[str] = ""  # how the spec looks, for error messages
    trainable: ClassVar[bool] = True  # False: a frozen program (archives) that cannot be a student
    carries_weights: ClassVar[bool] = False  # True: no --weights (the spec's file holds them)
    default_classes: ClassVar[int] = 10  # output classes when nothing says otherwise
    encoders: ClassVar[bool] = False  # True: `num_classes=0` builds the model without its classifier

    def claims(self, spec: str) -> bool:
        raise NotImplementedError

    def create(self, spec: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        """A new module with `num_classes` outputs for `in_channels` x `image_size` images."""
        raise NotImplementedError

    def declared_input(self, spec: str, weights: str | None, channels: int) -> dict | None:
        """The input (mean, std, image_size, resize, interpolation, and crop_pct where the resize was
        rounded from it) the model declares for data of `channels` channels, with these `--weights`,
        or None."""
        return None

    def named_weights(self, spec: str, weights: str) -> bool:
        """Whether `weights` names weights this source fetches itself (not a file)."""
        return False

    def create_with_weights(self, spec: str, weights: str, num_classes: int, in_channels: int) -> nn.Module:
        """A module loaded with the named weights (`named_weights` is true)."""
        raise NotImplementedError

    def encoder_weights(self, model: nn.Module, state_dict: dict) -> dict:
        """The weights of an encoder (`num_classes=0`, `encoders`) from a checkpoint that may still hold
        the classifier the encoder lacks."""
        return state_dict

    def names(self) -> list[str]:
        """Names this source lists in messages (zoo names), else nothing."""
        return []
