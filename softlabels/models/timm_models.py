"""`timm:NAME` (or `timm:NAME.TAG`): any timm model, with its pretrained config's eval transform as
its declared input. `--weights pretrained` takes timm's own weights (needs a network); otherwise
weights come from a local file. timm is an optional extra (`softlabels.extras`)."""

from __future__ import annotations

import difflib
import math

from softlabels.extras import install_hint
from softlabels.models.base import ModelSource

PREFIX = "timm:"
PRETRAINED = "pretrained"


def import_timm():
    try:
        import timm
    except ImportError:
        raise ValueError(f"timm:NAME models need timm: {install_hint('timm')}") from None
    return timm


class TimmSource(ModelSource):
    name = "timm"
    form = "timm:NAME"
    default_classes = 1000
    encoders = True  # timm's num_classes=0: the pooled pre-logits features, no classifier

    def claims(self, spec):
        return spec.startswith(PREFIX)

    def _name(self, spec: str) -> str:
        timm = import_timm()
        name = spec[len(PREFIX) :]
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown timm model {name!r}{hint} (timm.list_models('*{name[:4]}*') lists more)")
        return name

    def create(self, spec, num_classes, in_channels, image_size):
        return import_timm().create_model(
            self._name(spec), pretrained=False, num_classes=num_classes, in_chans=in_channels
        )

    def declared_input(self, spec, weights, channels):
        """The eval transform of the model's pretrained config (timm's `resolve_data_config`)."""
        name = self._name(spec)  # imports timm, or says how to install it
        from timm.data import resolve_data_config
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        if cfg is None:
            return None
        data = resolve_data_config({}, pretrained_cfg=cfg.to_dict())
        return timm_input(data, spec)

    def named_weights(self, spec, weights):
        return weights == PRETRAINED

    def create_with_weights(self, spec, weights, num_classes, in_channels):
        name = self._name(spec)
        try:
            return import_timm().create_model(name, pretrained=True, num_classes=num_classes, in_chans=in_channels)
        except Exception as err:  # no network, hub errors: the user can still bring a file
            raise ValueError(
                f"could not fetch timm's pretrained weights for {name} ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); where there is no network, save "
                f"the weights elsewhere and pass --weights FILE"
            ) from None

    def encoder_weights(self, model, state_dict):
        """Without the classifier (timm's `pretrained_cfg["classifier"]`, e.g. `fc` or `head.fc`) that a
        classifier's checkpoint holds and an encoder does not, as timm drops it for num_classes=0."""
        heads = model.pretrained_cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        kept = model.state_dict()
        return {
            key: value
            for key, value in state_dict.items()
            if key in kept or not any(key.startswith(f"{head}.") for head in heads)
        }

    def pretrained_classes(self, spec: str, weights: str | None = None) -> int | None:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(self._name(spec))
        return None if cfg is None else cfg.num_classes


def timm_input(data: dict, spec: str) -> dict:
    """timm's data config (input_size, crop_pct, crop_mode, interpolation, mean, std) as our input."""
    _, height, width = data["input_size"]
    if height != width:
        raise ValueError(f"{spec} takes {height}x{width} inputs; only square inputs are supported")
    if data.get("crop_mode", "center") != "center":
        raise ValueError(
            f"{spec}'s eval transform uses crop_mode {data['crop_mode']!r}; only 'center' is supported: "
            f"pass --image-size, --mean and --std to choose the input yourself"
        )
    return {
        "mean": tuple(data["mean"]),
        "std": tuple(data["std"]),
        "image_size": int(height),
        "resize": math.floor(height / data.get("crop_pct", 1.0)),
        "interpolation": data["interpolation"],
        "crop_pct": data.get("crop_pct", 1.0),  # exact: another --image-size scales the resize by it
    }
