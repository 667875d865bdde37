"""Training memory: what one student needs (weights, gradients, optimizer state, activations at the
batch size), what the device has free, and `check_fits`, which refuses a sweep whose students trained
together would not fit, in one line, before any data is read.

Activations are measured, not guessed: a probe forward and backward on a batch of 2 (on the CPU,
with torch's RNG untouched) records the bytes autograd saves for the backward pass, which grow
linearly with the batch. fp16 autocast (CUDA) saves about half of that: the float32 estimate is an
upper bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from softlabels.data import open_dataset
from softlabels.models.inputs import data_input
from softlabels.models.preprocessing import Preprocessing
from softlabels.runtime import current_rank
from softlabels.store import read_info
from trainer.config import FitConfig
from trainer.loop import device_for
from trainer.setup import labelled_prep
from trainer.students import create_student

PROBE_BATCH = 2
OPTIMIZER_COPIES = {"sgd": 1, "adamw": 2}  # momentum; AdamW's two moments


@dataclass(frozen=True)
class Footprint:
    """Bytes one student needs while it trains."""

    params: int
    grads: int
    optimizer: int
    activations: int  # saved for the backward pass, at the batch size (the input batch included)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.activations


def measure(model: nn.Module, example: torch.Tensor, batch_size: int, optimizer: str = "sgd") -> Footprint:
    """The footprint of training `model` at `batch_size`, from one probe step on `example` (a batch)."""
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in param_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.random.fork_rng(devices=[]), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        was_training = model.train().training
        model(example).float().sum().backward()
        model.train(was_training)
    model.zero_grad(set_to_none=True)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    activations = round(sum(saved.values()) * batch_size / len(example))
    return Footprint(params, trained, trained * OPTIMIZER_COPIES.get(optimizer, 2), activations)


def student_footprint(spec: str, prep: Preprocessing, num_classes: int, batch_size: int, optimizer: str) -> Footprint:
    """A fresh `spec` student's footprint on views of `prep` (built on the CPU, never trained)."""
    with torch.random.fork_rng(devices=[]):
        model = create_student(spec, num_classes, *prep.model_geometry)
    channels, size = prep.model_geometry
    example = torch.zeros(PROBE_BATCH, channels, size, size) if prep.is_image else torch.zeros(PROBE_BATCH, channels)
    return measure(model, example, batch_size, optimizer)


def run_footprint(config: FitConfig, views: tuple[Preprocessing, int] | None = None) -> Footprint:
    """A run's footprint; `views`: its views' input and class count when already known."""
    prep, num_classes = views or views_of(config)
    return student_footprint(config.model.student, prep, num_classes, config.optim.batch_size, config.optim.optimizer)


def views_of(config: FitConfig) -> tuple[Preprocessing, int]:
    """The input a run's views are made for and its class count, from metadata: a cache's record, or
    the dataset's listing (from labels, the student's own input; online, the dataset's default)."""
    runtime = config.runtime
    if runtime.cache:
        info = read_info(runtime.cache[0])  # several caches share their input and classes (trainer.combined)
        return info.input, info.layout.num_classes
    assert config.data.dataset is not None  # check_config
    source = open_dataset(config.data.dataset, config.data.split, runtime.data_root, runtime.download)
    prep = data_input(source.defaults) if config.objective.teacher else labelled_prep(config, source)
    return prep, len(source.classes)


def available_bytes(device: torch.device) -> int:
    """Free memory on the device: CUDA's free bytes, or the kernel's MemAvailable on the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def check_fits(streams: Sequence[Sequence[FitConfig]], base: FitConfig, free: int | None = None) -> None:
    """Refuse (ValueError, one line) when the students trained together would not fit in the device's
    free memory (`free`, else measured). Runs whose footprint cannot be measured (an unknown student)
    are left out: they fail on their own."""
    device = device_for(base, current_rank())
    worst, need = [], 0
    for stream in streams:
        views: dict[str, tuple[Preprocessing, int]] = {}
        total, names = 0, []
        for config in stream:
            try:
                key = config.model.student if not (config.runtime.cache or config.objective.teacher) else ""
                views.setdefault(key, views_of(config))
                total += run_footprint(config, views[key]).total
                names.append(Path(config.runtime.out).name)
            except Exception:  # noqa: BLE001 - the run meets the same error when it starts, and fails alone
                continue
        if total > need:
            worst, need = names, total
    free = available_bytes(device) if free is None else free
    if need > free:
        together = f"{len(worst)} students together ({', '.join(worst)})" if len(worst) > 1 else worst[0]
        raise ValueError(
            f"this sweep would not fit on {device}: training {together} needs about {_gib(need)} (weights, "
            f"gradients, optimizer state and activations at --batch-size {base.optim.batch_size}) but "
            f"{_gib(free)} is free; use --sequential, fewer students or a smaller --batch-size"
        )


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


def per_gb(footprint: Footprint) -> float:
    """How many such students fit in 1 GiB."""
    return 2**30 / footprint.total
