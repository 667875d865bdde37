"""`FILE.py:FUNC`: a factory in the user's own file, called as FUNC(num_classes=..., [in_channels=...,
image_size=...]) (the optional arguments only where its signature takes them)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from torch import nn

from softlabels.models.base import ModelSource
from softlabels.userfiles import import_user_file

FACTORY_SPEC = re.compile(r"^(?P<file>.+\.py):(?P<func>[A-Za-z_]\w*)$")


class FactorySource(ModelSource):
    name = "file"
    form = "FILE.py:FUNC"

    def claims(self, spec):
        return FACTORY_SPEC.match(spec) is not None

    def create(self, spec, num_classes, in_channels, image_size):
        match = FACTORY_SPEC.match(spec)
        path, func = Path(match["file"]), match["func"]
        module = import_user_file(path, "model")
        factory = getattr(module, func, None)
        if not callable(factory):
            raise ValueError(
                f"{path} has no function {func!r}; functions defined there: {', '.join(_defined(module)) or 'none'}"
            )
        model = factory(**_factory_kwargs(factory, f"{path}:{func}", num_classes, in_channels, image_size))
        if not isinstance(model, nn.Module):
            raise ValueError(f"{path}:{func} returned {type(model).__name__}, not a torch.nn.Module")
        return model


def _defined(module) -> list[str]:
    return sorted(
        n
        for n, obj in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and getattr(obj, "__module__", None) == module.__name__
    )


def _factory_kwargs(factory, name: str, num_classes: int, in_channels: int, image_size: int) -> dict:
    """num_classes always; in_channels and image_size only where the factory accepts them."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return {"num_classes": num_classes}
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "num_classes" not in params and not takes_any:
        raise ValueError(f"{name} must accept a num_classes keyword argument; its signature is {signature}")
    optional = {"in_channels": in_channels, "image_size": image_size}
    return {"num_classes": num_classes, **{k: v for k, v in optional.items() if takes_any or k in params}}
