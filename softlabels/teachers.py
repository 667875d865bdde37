"""Teachers: model specs -> modules, and checkpoint loading that users can trust.

A spec is one of
  - a zoo name (`softlabels.zoo.list_models()`), e.g. `cifar_resnet56`;
  - `torchvision:NAME`, any torchvision classifier, built without weights;
  - `FILE.py:FUNC`, a factory in the user's own file, called as FUNC(num_classes=...);
  - a path to an archive that carries both code and weights: `.pt2` (torch.export) or TorchScript.
Weights come separately (`--weights`) as a state dict; wrappers such as {"state_dict": ...},
`module.` (DataParallel) and `_orig_mod.` (torch.compile) are stripped, then keys must match exactly.
`create_model` is shared with the trainer's student registry.
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from softlabels.zoo import ZOO, list_models
from softlabels.userfiles import import_user_file

TORCHVISION_PREFIX = "torchvision:"
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
KEY_PREFIXES = ("module.", "_orig_mod.")
ARCHIVE_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".jit", ".th", ".zip")
DEFAULT_NUM_CLASSES = 10
TORCHVISION_NUM_CLASSES = 1000
_FACTORY_SPEC = re.compile(r"^(?P<file>.+\.py):(?P<func>[A-Za-z_]\w*)$")
_SHOWN = 10  # keys listed in a mismatch message


# --- specs -> modules -----------------------------------------------------------------------


def create_model(
    spec: str, num_classes: int, in_channels: int = 3, image_size: int = 32
) -> tuple[nn.Module, dict | None]:
    """Build the module a spec names; returns (model, preprocessing or None).

    Archives carry their own head: `num_classes`, `in_channels` and `image_size` do not apply to them.
    """
    if spec in ZOO:
        entry = ZOO[spec]
        model = entry.factory(num_classes, in_channels=in_channels, image_size=image_size)
        return model, None if entry.preprocessing is None else dict(entry.preprocessing)
    if spec.startswith(TORCHVISION_PREFIX):
        return _torchvision_model(spec[len(TORCHVISION_PREFIX):], num_classes, in_channels), None
    match = _FACTORY_SPEC.match(spec)
    if match:
        return _factory_model(Path(match["file"]), match["func"], num_classes, in_channels, image_size), None
    archive = archive_path(spec)
    if archive is not None:
        return load_archive(archive), None
    if spec.endswith(".py"):
        raise ValueError(f"{spec!r}: name the factory function too, as FILE.py:FUNC")
    if _looks_like_path(spec):
        raise FileNotFoundError(f"model archive {spec!r} does not exist")
    raise ValueError(
        f"unknown model {spec!r}; choose one of: {', '.join(list_models())} "
        "or torchvision:NAME, FILE.py:FUNC, or a TorchScript/torch.export archive path"
    )


def archive_path(spec: str) -> Path | None:
    """The spec as an archive path if it names an existing file (and is not a zoo/torchvision/FILE.py spec)."""
    if spec in ZOO or spec.startswith(TORCHVISION_PREFIX) or _FACTORY_SPEC.match(spec):
        return None
    path = Path(spec).expanduser()
    return path if path.is_file() and path.suffix != ".py" else None


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.lower().endswith(ARCHIVE_SUFFIXES)


def _torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

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


def _factory_model(path: Path, func: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    module = import_user_file(path, "model")
    factory = getattr(module, func, None)
    if not callable(factory):
        available = sorted(
            n for n, obj in vars(module).items()
            if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module.__name__
        )
        raise ValueError(f"{path} has no function {func!r}; functions defined there: {', '.join(available) or 'none'}")
    kwargs = _factory_kwargs(factory, f"{path}:{func}", num_classes, in_channels, image_size)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"{path}:{func} returned {type(model).__name__}, not a torch.nn.Module")
    return model


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


# --- archives: code and weights in one file ---------------------------------------------------


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


# --- checkpoints ------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its plain state dict (wrappers and prefixes removed).

    Without `trust` only tensors and plain containers are unpickled (`weights_only=True`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if trust:
        warnings.warn(
            f"loading {path} with full unpickling (--trust-checkpoint): this runs code from the file",
            UserWarning, stacklevel=2,
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        if trust:
            raise ValueError(f"checkpoint {path} could not be unpickled: {error}") from error
        raise _unsafe_checkpoint_error(path, str(error)) from error
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch checkpoint: {type(error).__name__}: {error}") from error
    return unwrap_state_dict(obj)


def _unsafe_checkpoint_error(path: Path, message: str) -> ValueError:
    """Tell a pickled object that weights_only refuses apart from a file that is not a pickle at all."""
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", message, re.S)
    reason = " ".join((match[1] if match else message.strip().splitlines()[-1]).split())
    if reason.startswith("Unsupported global"):
        reason = reason.split(" Please use")[0].rstrip(".")  # torch's advice to allowlist would bypass our flag
        return ValueError(
            f"checkpoint {path} cannot be loaded safely (weights_only): {reason}; "
            "pass --trust-checkpoint only if you trust its author"
        )
    return ValueError(
        f"{path} is not a readable torch checkpoint (weights_only unpickler: {reason}); check that the "
        "file is complete and was written by torch.save; if so, and you trust its author, try --trust-checkpoint"
    )


def unwrap_state_dict(obj) -> dict[str, torch.Tensor]:
    """Dig the state dict out of common checkpoint wrappers and strip `module.`/`_orig_mod.` prefixes."""
    for _ in range(8):  # wrappers nest a few levels at most
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if not isinstance(obj, Mapping) or _is_state_dict(obj):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), (Mapping, nn.Module))), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"checkpoint holds {type(obj).__name__}, not a non-empty state dict")
    if not _is_state_dict(obj):
        bad = [f"{k} ({type(v).__name__})" for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        raise ValueError(
            f"checkpoint is not a state dict: non-tensor entries {', '.join(bad[:_SHOWN])}; "
            f"expected tensors, or one of the keys {', '.join(WRAPPER_KEYS)} holding them"
        )
    return strip_prefixes(dict(obj))


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove `module.` / `_orig_mod.` while every key starts with one (nesting included)."""
    while True:
        prefix = next((p for p in KEY_PREFIXES if all(k.startswith(p) for k in state_dict)), None)
        if prefix is None:
            return state_dict
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict whose keys and shapes match the model exactly, or explain the difference.

    The one tolerance: BatchNorm `num_batches_tracked` counters, absent from checkpoints saved by
    PyTorch < 0.4.1 (such as the public CIFAR ResNets), keep the model's own value.
    """
    expected = model.state_dict()
    state_dict = dict(state_dict)
    for key in expected.keys() - state_dict.keys():
        if key.endswith("num_batches_tracked"):
            state_dict[key] = expected[key]
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or reshaped:
        raise ValueError(_mismatch_message(type(model).__name__, missing, unexpected, reshaped))
    model.load_state_dict(state_dict, strict=True)


def _mismatch_message(model_name: str, missing: list, unexpected: list, reshaped: list) -> str:
    def listed(label: str, items: list) -> str:
        more = f", ... (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
        return f"{len(items)} {label}: {', '.join(items[:_SHOWN])}{more}" if items else f"0 {label}"

    parts = [listed("missing keys", missing), listed("unexpected keys", unexpected),
             listed("shape mismatches", reshaped)]
    return (
        f"checkpoint does not match the {model_name} model: {'; '.join(parts)}. "
        "Check that the architecture spec (depth, width, num_classes, in_channels) is the one the "
        "checkpoint was trained with."
    )


# --- teachers ---------------------------------------------------------------------------------


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Teacher:
    """A model in eval mode plus where it came from. For an archive, `weights` is the archive itself."""

    model: nn.Module
    spec: str
    weights: str | None
    weights_name: str | None
    weights_sha256: str | None
    num_params: int
    preprocessing: dict | None

    def describe(self) -> dict:
        """JSON-able provenance: spec, weights file name and hash, size and class of the model."""
        return {
            "spec": self.spec,
            "weights": self.weights,
            "weights_name": self.weights_name,
            "weights_sha256": self.weights_sha256,
            "num_params": self.num_params,
            "model_class": getattr(self.model, "original_name", type(self.model).__name__),
        }


def load_teacher(
    spec: str,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    trust_checkpoint: bool = False,
    in_channels: int = 3,
    image_size: int = 32,
) -> Teacher:
    """Create the model a spec names, load its weights (if any) and put it in eval mode.

    num_classes defaults to 1000 for torchvision:NAME and 10 otherwise; archives ignore it.
    """
    archive = archive_path(spec)
    if archive is not None and weights is not None:
        raise ValueError(f"{spec} is an archive that carries its own weights; drop --weights {weights}")
    if num_classes is None:
        num_classes = TORCHVISION_NUM_CLASSES if spec.startswith(TORCHVISION_PREFIX) else DEFAULT_NUM_CLASSES
    model, preprocessing = create_model(spec, num_classes, in_channels, image_size)
    if weights is not None:
        load_weights(model, load_checkpoint(weights, trust=trust_checkpoint))
    source = archive if archive is not None else weights
    return Teacher(
        model=model.eval(),
        spec=spec,
        weights=None if source is None else str(source),
        weights_name=None if source is None else Path(source).name,
        weights_sha256=None if source is None else sha256_file(source),
        num_params=sum(p.numel() for p in model.parameters()),
        preprocessing=preprocessing,
    )
