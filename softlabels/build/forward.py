"""What the teacher pass takes from its teachers: logits, embeddings, or both (`--targets`).

`TargetKinds` is the parsed choice (kinds, `--embedding-layer`, `--embedding-dtype`); `probe` runs
every teacher once on a real sample before any work and refuses what cannot be stored (an encoder
asked for logits, a layer that does not exist, teachers whose embeddings differ in width);
`forward` runs the teachers on a batch of views and returns what the store encodes.
Which tensor is a model's embedding is `softlabels.models.features`' to say.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from softlabels.models.features import EmbeddingTap
from softlabels.runtime import autocast
from softlabels.store.embedding import parse_targets
from softlabels.views import Normalize, flatten_views, to_device


@dataclass(frozen=True)
class TargetKinds:
    kinds: tuple[str, ...] = ("logits",)
    layer: str | None = None
    dtype: str = "float16"

    @classmethod
    def parse(cls, targets: str, layer: str | None, dtype: str) -> TargetKinds:
        kinds = parse_targets(targets)
        if "embedding" not in kinds and (layer is not None or dtype != "float16"):
            raise ValueError("--embedding-layer and --embedding-dtype need --targets embedding or logits,embedding")
        return cls(kinds, layer, dtype)

    @property
    def logits(self) -> bool:
        return "logits" in self.kinds

    @property
    def embedding(self) -> bool:
        return "embedding" in self.kinds


@dataclass(frozen=True)
class Probed:
    """What one probe of the teachers found: output width (class count) and embedding width."""

    num_outputs: int
    embedding_dim: int = 0


def probe(teachers, device, example, kinds: TargetKinds, num_classes: int | None) -> list[Probed]:
    """Run every teacher on `example` (two copies of a real view); refuse what cannot be stored."""
    found = [_probe_one(t, device, example, kinds, num_classes) for t in teachers]
    dims = {p.embedding_dim for p in found}
    if len(dims) > 1:
        widths = ", ".join(f"{t.spec}: {p.embedding_dim}" for t, p in zip(teachers, found))
        raise ValueError(f"the teachers' embeddings differ in width ({widths}): one cache stores one width")
    return found


def _probe_one(teacher, device, example, kinds: TargetKinds, num_classes: int | None) -> Probed:
    normalised = to_device(Normalize(teacher.input).to(device)(to_device(example, device)), device)
    with EmbeddingTap(teacher.model, kinds.layer) as tap:  # a layer that does not exist is refused here
        try:
            with torch.inference_mode():
                out = teacher.model(normalised)
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(
                f"the teacher {teacher.spec} cannot run on {_shapes(example)} inputs ({str(err).splitlines()[0]}); "
                f"check the model, --image-size, --mean/--std"
            ) from None
        classifier = tap.made_by_head(out)
        features = tap.take(out) if kinds.embedding and isinstance(out, torch.Tensor) else None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        what = "(batch, dim) features" if not kinds.logits else "(batch, classes) logits"
        raise ValueError(f"the teacher must return {what}, got {shape}")
    if kinds.logits and not classifier and int(out.shape[1]) != num_classes:
        raise ValueError(
            f"the teacher {teacher.spec} is an encoder (it returns {int(out.shape[1])}-D features and no classifier "
            f"layer makes them): it has no logits to store; build its embeddings with --targets embedding"
        )
    return Probed(int(out.shape[1]), 0 if features is None else int(features.shape[1]))


@contextlib.contextmanager
def taps(members, kinds: TargetKinds):
    """An `EmbeddingTap` on every teacher model (None each when no embeddings are stored)."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(EmbeddingTap(model, kinds.layer)) if kinds.embedding else None for model, _ in members
        ]


def forward(members: list, taps_, views, device, amp: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, V, C) logits and (B, V, D) embeddings (None without taps) of one teacher, or (B, V, M, ...)
    of M teachers, on the same views (a tensor, or a dict of tensors for tensor samples)."""
    batch, num_views = _leading(views)
    images = to_device(flatten_views(views), device)
    logits, features = [], []
    for (model, normalize), tap in zip(members, taps_):
        normalised = normalize(images)  # float32, outside autocast
        with autocast(device, amp):
            out = model(normalised)
        logits.append(out.float().view(batch, num_views, -1))
        if tap is not None:
            features.append(tap.take(out).view(batch, num_views, -1))
    return _join(logits), _join(features) if features else None


def _join(outputs: list[torch.Tensor]) -> torch.Tensor:
    return outputs[0] if len(outputs) == 1 else torch.stack(outputs, dim=2)


def _leading(views) -> tuple[int, int]:
    first = next(iter(views.values())) if isinstance(views, dict) else views
    return int(first.shape[0]), int(first.shape[1])


def _shapes(batch) -> str:
    if isinstance(batch, dict):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)} {v.dtype}" for k, v in batch.items()) + "}"
    return f"{tuple(batch.shape)} {batch.dtype}"
