"""Weights files: reading checkpoints users can trust, and loading them into a model exactly.

Checkpoints are read with `weights_only=True` (tensors and plain containers, no code) unless the user
trusts the file. Wrappers such as {"state_dict": ...}, `module.` (DataParallel) and `_orig_mod.`
(torch.compile) are stripped, then keys and shapes must match exactly. A checkpoint written by
`trainer fit` also records the model spec and the input it was trained with (`Weights.input`).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from softlabels.inputs import Preprocessing

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
KEY_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 10  # keys listed in a mismatch message


@dataclass
class Weights:
    """A checkpoint's state dict and what it says about itself (trainer checkpoints only)."""

    state_dict: dict[str, torch.Tensor]
    input: Preprocessing | None = None  # the input the weights were trained with
    spec: str | None = None  # the model spec they belong to
    num_classes: int | None = None


def read_weights(path: str | Path, trust: bool = False) -> Weights:
    """The state dict of a checkpoint file and the training config it records, if any."""
    obj = _load(Path(path), trust)
    return Weights(unwrap_state_dict(obj), *_recorded(obj))


def _recorded(obj) -> tuple[Preprocessing | None, str | None, int | None]:
    """(input, spec, classes) recorded by `trainer fit` checkpoints; Nones for other files."""
    if not isinstance(obj, Mapping):
        return None, None, None
    prep, config, classes = obj.get("preprocessing"), obj.get("config"), obj.get("classes")
    try:
        recorded = Preprocessing.from_dict(dict(prep)) if isinstance(prep, Mapping) else None
    except (KeyError, TypeError, ValueError):
        recorded = None
    spec = config.get("student") if isinstance(config, Mapping) else None
    return recorded, spec if isinstance(spec, str) else None, len(classes) if isinstance(classes, list) else None


def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its plain state dict (wrappers and prefixes removed).

    Without `trust` only tensors and plain containers are unpickled (`weights_only=True`).
    """
    return read_weights(path, trust).state_dict


def _load(path: Path, trust: bool):
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if trust:
        warnings.warn(
            f"loading {path} with full unpickling (--trust-checkpoint): this runs code from the file",
            UserWarning,
            stacklevel=2,
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        if trust:
            raise ValueError(f"checkpoint {path} could not be unpickled: {error}") from error
        raise _unsafe_checkpoint_error(path, str(error)) from error
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch checkpoint: {type(error).__name__}: {error}") from error
    return obj


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
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}


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
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or reshaped:
        raise ValueError(_mismatch_message(type(model).__name__, missing, unexpected, reshaped))
    model.load_state_dict(state_dict, strict=True)


def _mismatch_message(model_name: str, missing: list, unexpected: list, reshaped: list) -> str:
    def listed(label: str, items: list) -> str:
        more = f", ... (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
        return f"{len(items)} {label}: {', '.join(items[:_SHOWN])}{more}" if items else f"0 {label}"

    parts = [
        listed("missing keys", missing),
        listed("unexpected keys", unexpected),
        listed("shape mismatches", reshaped),
    ]
    return (
        f"checkpoint does not match the {model_name} model: {'; '.join(parts)}. "
        "Check that the architecture spec (depth, width, num_classes, in_channels) is the one the "
        "checkpoint was trained with."
    )


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
