"""Archives that carry code and weights in one file: `.pt2` (torch.export) or TorchScript. They keep
their own head and input, so `num_classes`, `in_channels` and `image_size` do not apply to them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from softlabels.models.base import ModelSource

ARCHIVE_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".jit", ".th", ".zip")


class ArchiveSource(ModelSource):
    name = "archive"
    form = "a TorchScript/torch.export archive path"
    trainable = False
    carries_weights = True

    def claims(self, spec):
        path = Path(spec).expanduser()
        return path.is_file() and path.suffix != ".py"

    def create(self, spec, num_classes, in_channels, image_size):
        return load_archive(Path(spec).expanduser())


def looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.lower().endswith(ARCHIVE_SUFFIXES)


class ExportedModule(nn.Module):
    """A torch.export program as a module; its graph keeps the train/eval mode it was exported in.

    The exported GraphModule refuses `.eval()`; this wrapper accepts it so callers need no special case.
    """

    def __init__(self, graph_module: nn.Module):
        super().__init__()
        self.graph = graph_module

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode  # the graph itself is fixed: export it from a model in eval mode
        return self

    def forward(self, *args, **kwargs):
        return self.graph(*args, **kwargs)


def load_archive(path: str | Path) -> nn.Module:
    """Load a `.pt2` torch.export archive or, for any other file, a TorchScript archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model archive {str(path)!r} does not exist")
    if path.suffix == ".pt2":
        try:
            return ExportedModule(torch.export.load(str(path)).module())
        except Exception as error:
            raise ValueError(f"{path} is not a loadable torch.export archive (.pt2): {error}") from error
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise ValueError(
            f"{path} is not a TorchScript archive ({type(error).__name__}: {str(error).splitlines()[0]}). "
            "A checkpoint of weights goes to --weights, with an architecture spec such as cifar_resnet56"
        ) from error
