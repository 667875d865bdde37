"""Run files: checkpoints (weights, config, fingerprint, resume state) and atomic writes of every output.

Checkpoints hold tensors, numbers, strings, lists and dicts only, so `torch.load(weights_only=True)`
reads them (no code runs). The weights sit under "model", which `softlabels build --weights` finds,
so a teacher trained here builds a cache directly; `best.json` and `best.safetensors` carry the model
spec, classes and input beside it. `last.pt` adds what an exact resume needs: the
optimizer, schedule, gradient scaler and RNG states and the metrics history.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from softlabels.atomic import write_bytes_atomic
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.weights import WeightsConfig, write_weights

CHECKPOINT_VERSION = 1


def write_text_atomic(text: str, path: str | Path) -> Path:
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(obj, path: str | Path) -> Path:
    return write_text_atomic(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def save_checkpoint(state: dict, path: str | Path) -> Path:
    buffer = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, **state}, buffer)
    return write_bytes_atomic(buffer.getvalue(), path)


def load_checkpoint(path: str | Path) -> dict:
    """A run checkpoint, read with weights_only=True; errors say what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: nothing to resume (drop --resume to start a new run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} is not a readable trainer checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); start again without --resume"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a trainer checkpoint (no 'model' and 'config' entries)")
    return state


def rng_state() -> dict:
    """Torch's CPU and CUDA generator states, as tensors."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_differences(saved: dict, current: dict) -> list[str]:
    """Settings that differ between a checkpoint's and this run's, as `group.name: ...` lines.

    Both are nested dicts (a config's `identity()`, or a data identity); nested keys are compared
    one by one so the message names the setting.
    """
    saved, current = _flatten(saved), _flatten(current)
    return [
        f"{key}: checkpoint has {saved.get(key)!r}, this run {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and prefix == "" and key in _GROUPS:
            out.update(_flatten(value, f"{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


_GROUPS = ("data", "model", "objective", "optim", "runtime")


def check_resumable(state: dict, identity: dict, data_identity: dict, path: str | Path) -> None:
    """Refuse to resume a checkpoint made by another student, data, cache or schedule.

    `identity` is the run config's `identity()` (every option group but `runtime`); `data_identity`
    names what the run learns from: the training data's fingerprint and, with a cache, the cache's
    teacher and view settings (the cache's path may change, its content may not).
    """
    saved = {name: value for name, value in state["config"].items() if name != "runtime"}
    differences = resume_differences(state.get("identity", {}), data_identity)
    differences += resume_differences(saved, identity)
    if differences:
        raise ValueError(
            f"cannot resume {path}: it was trained with other settings ({differences[0]}"
            f"{f' and {len(differences) - 1} more' if len(differences) > 1 else ''}); "
            f"use the original options, or another --out for a new run"
        )


def save_weights(state: dict, spec: str, stem: Path) -> None:
    """`STEM.json` (model spec, classes, input) and, where safetensors is installed, `STEM.safetensors`
    with the same config in its metadata: what `softlabels build --weights` reads, with no other flag."""
    config = WeightsConfig(spec, Preprocessing.from_dict(state["preprocessing"]), tuple(state["classes"]))
    try:
        import safetensors  # noqa: F401
    except ImportError:
        write_json_atomic(config.to_dict(), stem.with_suffix(".json"))
        return
    write_weights(state["model"], config, stem.with_suffix(".safetensors"))
