"""Weights files: reading checkpoints users can trust, and loading them into a model exactly.

Checkpoints are read with `weights_only=True` (tensors and plain containers, no code) unless the user
trusts the file. Wrappers such as {"state_dict": ...}, `module.` (DataParallel) and `_orig_mod.`
(torch.compile) are stripped, then keys and shapes must match exactly. `.safetensors` files are read
with safetensors (an optional extra). Weights written by `trainer fit` also record the model spec,
the classes and the input they were trained with (`WeightsConfig`), inside `best.pt`/`last.pt`, in
the `.safetensors` metadata and in a `best.json` beside them, so `softlabels build --weights
RUN/best.pt` needs no other flag.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from softlabels.atomic import write_bytes_atomic
from softlabels.extras import install_hint
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.registry import create_model, source_for

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
KEY_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 10  # keys listed in a mismatch message


CONFIG_FORMAT = "softlabels-weights"


@dataclass(frozen=True)
class WeightsConfig:
    """What weights written by `trainer fit` say about themselves (JSON beside or inside the file)."""

    spec: str | None = None  # the model spec they belong to
    input: Preprocessing | None = None  # the input they were trained with
    classes: tuple[str, ...] | None = None

    @property
    def num_classes(self) -> int | None:
        return None if self.classes is None else len(self.classes)

    def to_dict(self) -> dict:
        return {
            "format": CONFIG_FORMAT,
            "version": 1,
            "model": self.spec,
            "classes": list(self.classes or []),
            "num_classes": self.num_classes,
            "input": None if self.input is None else self.input.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> WeightsConfig:
        """Our JSON config, or the entries of a `trainer fit` checkpoint (`config`, `preprocessing`, `classes`)."""
        prep = data.get("input", data.get("preprocessing"))
        config = data.get("config")
        spec = data.get("model") if isinstance(data.get("model"), str) else None
        if spec is None and isinstance(config, Mapping):  # a checkpoint: nested (now) or flat (0.1) config
            model = config.get("model")
            spec = model.get("student") if isinstance(model, Mapping) else config.get("student")
        classes = data.get("classes")
        try:
            recorded = Preprocessing.from_dict(dict(prep)) if isinstance(prep, Mapping) else None
        except (KeyError, TypeError, ValueError):
            recorded = None
        return cls(
            spec if isinstance(spec, str) else None,
            recorded,
            tuple(str(c) for c in classes) if isinstance(classes, list) and classes else None,
        )


@dataclass
class Weights:
    """A weights file's state dict and what it says about itself."""

    state_dict: dict[str, torch.Tensor]
    config: WeightsConfig = WeightsConfig()

    @property
    def input(self) -> Preprocessing | None:
        return self.config.input

    @property
    def spec(self) -> str | None:
        return self.config.spec

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes


def read_weights(path: str | Path, trust: bool = False) -> Weights:
    """The state dict of a weights file (checkpoint or `.safetensors`) and the config it records."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = _load(path, trust)
    config = WeightsConfig.from_dict(obj) if isinstance(obj, Mapping) else WeightsConfig()
    return Weights(unwrap_state_dict(obj), _with_sidecar(config, path))


def _with_sidecar(config: WeightsConfig, path: Path) -> WeightsConfig:
    """A `NAME.json` beside `NAME.pt` / `NAME.safetensors` fills in what the file itself does not say."""
    sidecar = path.with_suffix(".json")
    if config.spec or not sidecar.is_file():
        return config
    try:
        data = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{sidecar} is not readable JSON ({err})") from None
    return WeightsConfig.from_dict(data) if data.get("format") == CONFIG_FORMAT else config


def _read_safetensors(path: Path) -> Weights:
    try:
        from safetensors import safe_open
    except ImportError:
        raise ValueError(f"{path} is a .safetensors file: {install_hint('safetensors')}") from None
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as file:
            state = {key: file.get_tensor(key) for key in file.keys()}
            metadata = file.metadata() or {}
    except Exception as err:
        raise ValueError(f"{path} is not a readable .safetensors file ({type(err).__name__}: {err})") from None
    config = WeightsConfig()
    if metadata.get(CONFIG_FORMAT):
        config = WeightsConfig.from_dict(json.loads(metadata[CONFIG_FORMAT]))
    return Weights(strip_prefixes(state), _with_sidecar(config, path))


def write_weights(state_dict: Mapping[str, torch.Tensor], config: WeightsConfig, path: str | Path) -> None:
    """`path` as `.safetensors` with the config in its metadata, plus `NAME.json` beside it (atomic)."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state_dict.items()}
    text = json.dumps(config.to_dict(), sort_keys=True)
    write_bytes_atomic(save(tensors, metadata={CONFIG_FORMAT: text}), path)
    write_bytes_atomic(
        (json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n").encode(), path.with_suffix(".json")
    )


def state_dict_sha256(model: nn.Module) -> str:
    """SHA-256 over a model's parameters and buffers (names and bytes, in order): the identity of
    weights that come from no file of ours (torchvision's or timm's own)."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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


def load_model(
    spec: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    weights: str | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    new_head: bool = False,
) -> tuple[nn.Module, list[str]]:
    """`spec` built for this input, with its weights: weights its source names and fetches (`DEFAULT`,
    `pretrained`), else `state_dict` (read from a file), else none (freshly initialised): the one way
    teachers and students are made.

    Named weights keep their own classifier unless `new_head` (fine-tuning: a fresh `num_classes`
    head on the rest); returns the module and the keys left fresh (the new head, if any).
    """
    source = source_for(spec)
    named = weights if weights is not None and source.named_weights(spec, weights) else None
    if named is not None and not new_head:
        return source.create_with_weights(spec, named, num_classes, in_channels), []
    model = create_model(spec, num_classes, in_channels, image_size)  # first: a new head draws the same
    if named is not None:
        state_dict = source.create_with_weights(spec, named, source.default_classes, in_channels).state_dict()
    if state_dict is None:
        return model, []
    if num_classes == 0:  # an encoder: a classifier's checkpoint still loads, less its classifier
        state_dict = source.encoder_weights(model, dict(state_dict))
    return model, load_weights(model, state_dict, num_classes, new_head=new_head)


def load_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], num_classes: int | None = None, new_head: bool = False
) -> list[str]:
    """Load a state dict whose keys and shapes match the model exactly, or explain the difference.

    Args:
        model: the module to load into.
        state_dict: the weights.
        num_classes: the model's class count: names a classifier of another class count in errors.
        new_head: fine-tuning: keep the model's fresh classifier where the weights' has another
            class count (the tensors whose first axis is the class count), load everything else.
    Returns:
        The keys left at their fresh values (the new head), empty unless `new_head`.
    Raises:
        ValueError: listing missing, unexpected and reshaped keys.

    The one tolerance: BatchNorm `num_batches_tracked` counters, absent from checkpoints saved by
    PyTorch < 0.4.1 (such as the public CIFAR ResNets), keep the model's own value.
    """
    expected = model.state_dict()
    state_dict = dict(state_dict)
    for key in expected.keys() - state_dict.keys():
        if key.endswith("num_batches_tracked"):
            state_dict[key] = expected[key]
    head = _head_keys(expected, state_dict, num_classes)
    if new_head:
        state_dict.update({key: expected[key] for key in head})
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if head and not new_head and len(reshaped) == len(head) and not (missing or unexpected):
        theirs = state_dict[head[0]].shape[0]
        raise ValueError(
            f"the checkpoint's classifier ({head[0]}) has {theirs} classes but the model {num_classes}: "
            f"pass --num-classes {theirs} if the data has them; a teacher must output the dataset's "
            f"classes, so fine-tune it first (trainer fit --student SPEC --weights FILE --loss ce)"
        )
    if missing or unexpected or reshaped:
        raise ValueError(_mismatch_message(type(model).__name__, missing, unexpected, reshaped))
    model.load_state_dict(state_dict, strict=True)
    return list(head) if new_head else []


def _head_keys(
    expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], num_classes: int | None
) -> list[str]:
    """Keys of the output layer when only the class count differs: first axis num_classes in the model,
    another size in the weights, every other axis equal."""
    if num_classes is None:
        return []
    return [
        key
        for key, value in expected.items()
        if key in state_dict
        and value.ndim >= 1
        and value.shape[0] == num_classes
        and state_dict[key].shape[0] != num_classes
        and state_dict[key].shape[1:] == value.shape[1:]
    ]


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
