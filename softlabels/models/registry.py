"""Model specs -> modules, for teachers and students alike.

A spec is claimed by the first source in `SOURCES` that recognises it: a zoo name
(`softlabels.models.zoo.list_models()`), `torchvision:NAME`, `FILE.py:FUNC` (the user's factory), or the
path of an archive carrying code and weights (`.pt2` torch.export, TorchScript). A new source is one
`ModelSource` subclass in one file, added to `SOURCES`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from softlabels.models.archive import ArchiveSource, ExportedModule, load_archive, looks_like_path
from softlabels.models.base import ModelSource
from softlabels.models.factory import FactorySource
from softlabels.models.sklearn_models import SklearnSource
from softlabels.models.timm_models import TimmSource
from softlabels.models.torchvision_models import TorchvisionSource
from softlabels.models.zoo import ZooSource

SOURCES: tuple[ModelSource, ...] = (
    ZooSource(),
    TimmSource(),
    TorchvisionSource(),
    SklearnSource(),
    FactorySource(),
    ArchiveSource(),
)


def source_for(spec: str) -> ModelSource:
    """The source that claims `spec`; a clear error for specs nobody claims."""
    for source in SOURCES:
        if source.claims(spec):
            return source
    if spec.endswith(".py"):
        raise ValueError(f"{spec!r}: name the factory function too, as FILE.py:FUNC")
    if looks_like_path(spec):
        raise FileNotFoundError(f"model archive {spec!r} does not exist")
    names = [name for source in SOURCES for name in source.names()]
    forms = ", ".join(source.form for source in SOURCES if not source.names())
    raise ValueError(f"unknown model {spec!r}; choose one of: {', '.join(names)} or {forms}")


def create_model(spec: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A new module for `spec` (archives carry their own head: the other arguments do not apply)."""
    return source_for(spec).create(spec, num_classes, in_channels, image_size)


def declared_input(spec: str, weights: str | None = None, channels: int = 3) -> dict | None:
    """What the model declares as its input on data of `channels` channels, or None."""
    return source_for(spec).declared_input(spec, weights, channels)


def archive_path(spec: str) -> Path | None:
    """The spec as an archive path when an archive claims it, else None."""
    return Path(spec).expanduser() if isinstance(source_for_or_none(spec), ArchiveSource) else None


def source_for_or_none(spec: str) -> ModelSource | None:
    return next((source for source in SOURCES if source.claims(spec)), None)


__all__ = [
    "SOURCES",
    "ModelSource",
    "ExportedModule",
    "archive_path",
    "create_model",
    "declared_input",
    "load_archive",
    "source_for",
]
