"""`torchvision:NAME`: any torchvision classifier, built without weights (load them with --weights)."""

from __future__ import annotations

import difflib

from softlabels.models.base import ModelSource

PREFIX = "torchvision:"


class TorchvisionSource(ModelSource):
    name = "torchvision"
    form = "torchvision:NAME"

    def claims(self, spec):
        return spec.startswith(PREFIX)

    def create(self, spec, num_classes, in_channels, image_size):
        import torchvision

        name = spec[len(PREFIX) :]
        valid = torchvision.models.list_models(module=torchvision.models)  # classifiers only
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(
                f"unknown torchvision classifier {name!r}; {hint}valid names include: {', '.join(valid[:12])}, ... "
                f"({len(valid)} in all: torchvision.models.list_models(module=torchvision.models))"
            )
        if in_channels != 3:
            raise ValueError(f"torchvision:{name} takes 3-channel images, got in_channels={in_channels}")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
