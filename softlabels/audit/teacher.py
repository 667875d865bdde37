"""A cache against the teacher it says produced it: a few samples' views replayed from their stored
parameters and run through the teacher again (`recompute`), telling views that do not replay apart from
another teacher."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from softlabels import store
from softlabels.data import DatasetSource, key_text, open_dataset
from softlabels.models.features import EmbeddingTap
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.registry import archive_path, source_for
from softlabels.models.teachers import RANDOM_INIT_SEED, load_teacher
from softlabels.progress import bar as progress_bar
from softlabels.runtime import resolve_device
from softlabels.views import Normalize, ViewPipeline, replay_pipeline, replay_view, same, stack, to_device
from softlabels.views.proof import disturbed_globals, view_at

# Allowed |stored - recomputed| logit difference, as a fraction of the view's largest |logit| (at least
# 1): half precision (float16 storage or an AMP pass) keeps ~3 digits, float32 passes on another
# device or kernel (TF32 convolutions) still differ in the fourth.
RELATIVE_TOLERANCE = {"half": 2e-2, "float32": 5e-3}
# Largest 1 - cosine between a stored embedding and a fresh one: the encoding's rounding (int8, float16)
# or a half-precision forward (amp) stays well under these; another teacher or view does not.
EMBEDDING_TOLERANCE = {"int8": 1e-2, "half": 2e-3, "float32": 1e-5}


@dataclass
class Recomputed:
    """The outcome of re-running the teacher(s) on some samples of a cache."""

    keys: list[str]
    num_views: int
    worst: float  # largest |difference| / tolerance over every compared value (<= 1 passes)
    mismatches: list[tuple[str, int, float, float, str, str]]  # key, view, difference, tolerance, teacher, what
    members: list[str] = field(default_factory=list)
    unreplayable: list[tuple[str, int]] = field(default_factory=list)  # (key, view) made twice, differently

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.unreplayable)


def recompute(
    path,
    n: int,
    teacher: str | None = None,
    weights: str | None = None,
    *,
    source: DatasetSource | None = None,
    trust_checkpoint: bool = False,
    device: str = "auto",
    seed: int = 0,
    show_progress: bool = True,
) -> Recomputed:
    """Re-run the teacher (default: the recorded one; every member of a several-teacher cache) on `n`
    random samples (chosen by `seed`) and compare with the stored targets, replaying each view from
    its stored parameters. The images come from `source` (default: the recorded dataset), by key."""
    targets = store.CacheTargets(path, memory_budget=0)  # read only the rows recomputed
    info, layout = targets.info, targets.layout
    if source is None:
        if not info.dataset.spec:
            raise ValueError(f"{path} records no dataset: pass --dataset")
        source = open_dataset(info.dataset.spec, info.dataset.split, info.dataset.root or "data")
    members = _load_members(info, teacher, weights, trust_checkpoint, resolve_device(device))
    pipeline = replay_pipeline(info, source)
    rows = np.sort(np.random.default_rng(seed).choice(layout.num_samples, min(n, layout.num_samples), replace=False))
    keys = [str(k) for k in targets.keys_labels()[0]]
    index = {k: i for i, k in enumerate(source.keys)}
    tolerance = RELATIVE_TOLERANCE["half" if layout.dtype == "float16" or info.build.amp else "float32"]
    worst, mismatches, unreplayable = 0.0, [], []
    try:
        for row in progress_bar(list(map(int, rows)), desc="recomputing", unit="sample", enabled=show_progress):
            key = keys[row]
            if key not in index:
                raise ValueError(
                    f"sample {key_text(key)} of {path} is not in {source.spec} ({source.split}); "
                    f"point --dataset at the images the cache was built from"
                )
            stored = targets.rows(row)
            views = _views(pipeline, source, index[key], stored, layout.num_views)
            with disturbed_globals():  # the same views again: a difference is the views', not the teacher's
                again = _views(pipeline, source, index[key], stored, layout.num_views)
            unreplayable += [
                (key, v) for v in range(layout.num_views) if not same(view_at(views, v), view_at(again, v))
            ]
            for member, (name, model, normalize, device_) in enumerate(members):
                with torch.inference_mode(), EmbeddingTap(model, info.build.embedding_layer) as tap:
                    batch = normalize(to_device(views, device_))  # as the build feeds it: images, tensors, dicts
                    out = model(batch)
                    features = tap.take(out).cpu().numpy() if layout.embedding is not None else None
                    fresh = out.float().cpu().numpy()
                own = stored if len(members) == 1 else stored.member(member)
                found = _differences(own, fresh, tolerance) if layout.has_logits else []
                if features is not None:
                    found += _embedding_differences(own, features, _embedding_tolerance(info))
                for at, (difference, allowed) in enumerate(found):
                    worst = max(worst, difference / allowed)
                    what = "logits" if layout.has_logits and at < layout.num_views else "embeddings"
                    if difference > allowed:
                        mismatches.append((key, at % layout.num_views, difference, allowed, name, what))
    finally:
        targets.close()
    return Recomputed(
        [keys[r] for r in rows], layout.num_views, worst, mismatches, [m[0] for m in members], unreplayable
    )


def _load_members(info: store.CacheInfo, spec: str | None, weights: str | None, trust: bool, device) -> list:
    """(name, model, normalize, device) of every teacher to re-run, each with its recorded input."""
    from softlabels.runtime import prepare_model

    if len(info.members) > 1 and (spec or weights):
        raise ValueError(
            "this cache holds several teachers: --recompute re-runs each recorded one; drop --teacher/--weights"
        )
    members = []
    for record, name in zip(info.members, info.member_names):
        prep = Preprocessing.from_dict(record.input) if record.input else info.input
        model = _load_teacher(info, record, spec, weights, trust, prep)
        members.append((name, prepare_model(model, device).eval(), Normalize(prep).to(device), device))
    return members


def _load_teacher(
    info: store.CacheInfo, record: store.TeacherRecord, spec: str | None, weights: str | None, trust: bool, prep
):
    """The recorded (or given) teacher, built for exactly the input the cache records."""
    spec = spec or record.spec
    if not spec:
        raise ValueError("the cache records no teacher: pass --teacher (and --weights)")
    if weights is None and spec == record.spec and archive_path(spec) is None:
        weights = record.weights  # the recorded checkpoint, when it is still there
        named = weights is not None and source_for(spec).named_weights(spec, weights)
        if weights is not None and not named and not Path(weights).is_file():
            raise FileNotFoundError(f"the cache's teacher weights {weights} are not here; pass --weights")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)  # a teacher without weights: the network the build made
        return load_teacher(
            spec,
            weights=weights,
            num_classes=0 if record.num_classes == 0 else info.layout.num_classes,  # an encoder stays one
            trust_checkpoint=trust,
            recorded=prep,
        ).model


def _views(pipeline: ViewPipeline, source, index: int, stored: store.Rows, num_views: int) -> torch.Tensor:
    """The (V, C, S, S) un-normalised teacher inputs of one sample, replayed from the stored parameters."""
    x = pipeline.decode(source.load(index))
    return stack([replay_view(pipeline, x, stored.view(view)) for view in range(num_views)])


def _differences(stored: store.Rows, fresh: np.ndarray, tolerance: float):
    """(largest |difference|, allowed) per view, on what the storage mode keeps."""
    scale = np.maximum(1.0, np.abs(fresh).max(axis=-1))  # (V,)
    difference = stored.mode.differences(stored.targets, fresh)
    return [(float(d), float(tolerance * s)) for d, s in zip(difference, scale)]


def _embedding_tolerance(info: store.CacheInfo) -> float:
    dtype = info.layout.embedding_dtype
    if dtype == "int8":
        return EMBEDDING_TOLERANCE["int8"]
    return EMBEDDING_TOLERANCE["half" if dtype == "float16" or info.build.amp else "float32"]


def _embedding_differences(stored: store.Rows, fresh: np.ndarray, tolerance: float):
    """(1 - cosine, allowed) per view of the stored embeddings against fresh (V, D) features."""
    assert stored.embedding is not None
    return [(float(d), tolerance) for d in stored.embedding.differences(stored.targets, fresh)]
