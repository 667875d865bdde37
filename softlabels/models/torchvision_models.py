"""`torchvision:NAME`: any torchvision classifier. `--weights DEFAULT`, `IMAGENET1K_V2`, ... take
torchvision's own weights (they download once, where a network exists) with their `transforms()` as
the declared input; a local file is loaded like any checkpoint, and the model's DEFAULT weights'
transform is still its declared input (the eval transform its architecture was published with)."""

from __future__ import annotations

import difflib

from softlabels.models.base import ModelSource

PREFIX = "torchvision:"


class TorchvisionSource(ModelSource):
    name = "torchvision"
    form = "torchvision:NAME"
    default_classes = 1000

    def claims(self, spec):
        return spec.startswith(PREFIX)

    def _name(self, spec: str) -> str:
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
        return name

    def create(self, spec, num_classes, in_channels, image_size):
        import torchvision

        name = self._name(spec)
        if in_channels != 3:
            raise ValueError(f"torchvision:{name} takes 3-channel images, got in_channels={in_channels}")
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)

    def _weights(self, spec: str, weights: str | None):
        """The weights enum member that `weights` names (DEFAULT when it names none), or None."""
        import torchvision

        try:
            enum = torchvision.models.get_model_weights(self._name(spec))
        except (ValueError, KeyError):
            return None
        if weights is not None and self.named_weights(spec, weights):
            return enum[weights]
        return enum["DEFAULT"] if "DEFAULT" in enum.__members__ else None

    def declared_input(self, spec, weights, channels):
        member = self._weights(spec, weights)
        if member is None:
            return None
        transform = member.transforms()
        return {
            "mean": tuple(transform.mean),
            "std": tuple(transform.std),
            "image_size": int(transform.crop_size[0]),
            "resize": int(transform.resize_size[0]),
            "interpolation": transform.interpolation.value,
        }

    def named_weights(self, spec, weights):
        import torchvision

        try:
            return weights in torchvision.models.get_model_weights(self._name(spec)).__members__
        except (ValueError, KeyError):
            return False

    def create_with_weights(self, spec, weights, num_classes, in_channels):
        import torchvision

        member = self._weights(spec, weights)
        try:
            model = torchvision.models.get_model(self._name(spec), weights=member)
        except Exception as err:  # no network: say how to bring the file instead
            raise ValueError(
                f"could not fetch torchvision's {member} weights ({type(err).__name__}); where there "
                f"is no network, download them elsewhere and pass --weights FILE"
            ) from None
        return model

    def pretrained_classes(self, spec: str, weights: str | None = None) -> int | None:
        member = self._weights(spec, weights)
        return None if member is None else len(member.meta.get("categories") or []) or None
