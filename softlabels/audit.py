"""Checks of a cache against what lies outside it: the samples it says it describes (which keys were
added, removed, renamed or relabelled since) and the teacher it says produced it (recomputing a few
samples). `softlabels verify --dataset / --recompute` runs them; the trainer reuses `compare_samples`.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from softlabels import progress, store
from softlabels.data import DatasetSource, key_text, open_dataset
from softlabels.data.sample_errors import reading
from softlabels.models.features import EmbeddingTap
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.registry import archive_path, source_for
from softlabels.models.teachers import RANDOM_INIT_SEED, load_teacher
from softlabels.progress import bar as progress_bar
from softlabels.runtime import resolve_device
from softlabels.views import Normalize, ViewPipeline, replay_pipeline, replay_view, same, stack, to_device
from softlabels.views.proof import disturbed_globals, view_at

SHOWN = 3  # examples per kind of difference in a message
# Allowed |stored - recomputed| logit difference, as a fraction of the view's largest |logit| (at least
# 1): half precision (float16 storage or an AMP pass) keeps ~3 digits, float32 passes on another
# device or kernel (TF32 convolutions) still differ in the fourth.
RELATIVE_TOLERANCE = {"half": 2e-2, "float32": 5e-3}
# Largest 1 - cosine between a stored embedding and a fresh one: the encoding's rounding (int8, float16)
# or a half-precision forward (amp) stays well under these; another teacher or view does not.
EMBEDDING_TOLERANCE = {"int8": 1e-2, "half": 2e-3, "float32": 1e-5}


# ----------------------------------------------------------------------------- samples


@dataclass
class SampleDiff:
    """How a dataset's (key, label) list differs from the one a cache was built on (empty: the same)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    relabelled: list[tuple[str, str, int, int]] = field(default_factory=list)  # old key, new key, old, new label
    reordered: int = 0
    classes: tuple[list[str], list[str]] | None = None  # (cache's, dataset's) class names when they differ

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.renamed or self.relabelled or self.reordered or self.classes)

    def describe(self, classes=None) -> str:
        """One line: counts of each kind with a few examples; labels named with `classes`."""

        def name(label: int) -> str:
            return str(classes[label]) if classes is not None and 0 <= label < len(classes) else str(label)

        def moved(old: str, new: str, a: int, b: int) -> str:
            return f"{old}{'' if new == old else f' -> {new}'}: {name(a)} -> {name(b)}"

        parts = [
            _listed("added", self.added),
            _listed("removed", self.removed),
            _listed("renamed", [f"{a} -> {b}" for a, b in self.renamed]),
            _listed("relabelled", [moved(*item) for item in self.relabelled]),
        ]
        if self.reordered:
            parts.append(f"{self.reordered} samples in another order")
        if self.classes:
            parts.insert(0, f"classes differ (cache: {_short(self.classes[0])}; dataset: {_short(self.classes[1])})")
        return ", ".join(p for p in parts if p)


def _listed(kind: str, items: list[str]) -> str:
    if not items:
        return ""
    more = ", ..." if len(items) > SHOWN else ""
    return f"{len(items)} {kind} (e.g. {', '.join(key_text(item) for item in items[:SHOWN])}{more})"


def _short(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def compare_samples(cache_keys, cache_labels, keys, labels) -> SampleDiff:
    """What changed from the cache's (keys, labels) to a dataset's, both in dataset order.

    A key gone and a new one with the same file name (`cat/7.png` -> `dog/7.png`), or at the same
    position, count as one sample renamed (same label) or relabelled (moved to another class).
    """
    cached = {k: int(v) for k, v in zip(cache_keys, cache_labels)}
    current = {k: int(v) for k, v in zip(keys, labels)}
    gone = [k for k in cache_keys if k not in current]
    new = [k for k in keys if k not in cached]
    diff = SampleDiff(
        relabelled=[(k, k, cached[k], current[k]) for k in cache_keys if k in current and cached[k] != current[k]]
    )
    pairs = _renames(gone, new, list(cache_keys), list(keys))
    for old, renamed in pairs:
        if cached[old] == current[renamed]:
            diff.renamed.append((old, renamed))
        else:
            diff.relabelled.append((old, renamed, cached[old], current[renamed]))
    paired_old, paired_new = {a for a, _ in pairs}, {b for _, b in pairs}
    diff.removed = [k for k in gone if k not in paired_old]
    diff.added = [k for k in new if k not in paired_new]
    if not (gone or new):
        diff.reordered = sum(1 for a, b in zip(cache_keys, keys) if a != b)
    return diff


def _renames(gone: list[str], new: list[str], cache_keys: list[str], keys: list[str]) -> list[tuple[str, str]]:
    """Pair vanished keys with new ones: by a file name unique on both sides, else by position."""

    def by_name(names):
        found: dict[str, list[str]] = {}
        for key in names:
            found.setdefault(PurePosixPath(key).name, []).append(key)
        return {n: ks[0] for n, ks in found.items() if len(ks) == 1}

    old_names, new_names = by_name(gone), by_name(new)
    pairs = [(old_names[n], new_names[n]) for n in old_names if n in new_names]
    taken_old, taken_new = {a for a, _ in pairs}, {b for _, b in pairs}
    position = {k: i for i, k in enumerate(keys)}
    new_set = set(new)
    for i, old in enumerate(cache_keys):
        if old in taken_old or old in position or i >= len(keys):
            continue
        candidate = keys[i]
        if candidate in new_set and candidate not in taken_new:
            pairs.append((old, candidate))
            taken_new.add(candidate)
    return pairs


def check_against_dataset(path, source: DatasetSource, targets: store.CacheTargets | None = None) -> SampleDiff:
    """Compare a cache's keys and labels (its shard's rows, for a shard) with a dataset's; `targets`
    (the cache opened by the caller) reads them from the file it checked."""
    if targets is not None:
        info = targets.info
        cache_keys, cache_labels = targets.keys_labels()
    else:
        info = store.read_info(path)
        cache_keys, cache_labels = store.read_keys_labels(path)
    keys, labels = source.keys, source.labels
    if info.shard:
        keys, labels = keys[info.shard.start : info.shard.stop], labels[info.shard.start : info.shard.stop]
    diff = compare_samples(cache_keys, cache_labels, keys, labels)
    recorded = info.dataset.classes
    if recorded is not None and list(recorded) != list(source.classes):
        diff.classes = (list(recorded), list(source.classes))
    if not diff and info.fingerprint not in (None, store.dataset_fingerprint(keys, labels)):
        raise store.CacheError(f"{path}: its keys and labels do not match its own recorded fingerprint")
    return diff


def require_same_samples(path, source: DatasetSource, targets: store.CacheTargets | None = None) -> None:
    """Raise ValueError saying what differs when `source` is not the data the cache was built on."""
    diff = check_against_dataset(path, source, targets)
    if diff:
        raise ValueError(
            f"{path} was not built from {source.spec} ({source.split}): "
            f"{diff.describe(source.classes)}; rebuild the cache for these samples "
            f"or point --dataset at the ones it was built from"
        )


# ----------------------------------------------------------------------------- teacher


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
            num_classes=info.layout.num_classes,
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


# ----------------------------------------------------------------------------- `softlabels verify`


@dataclass(frozen=True)
class VerifyConfig:
    """What `softlabels verify` checks: always the file itself; optionally the samples (keys, labels and
    content) and the teacher."""

    path: str
    dataset: str | None = None
    split: str | None = None
    data_root: str = "data"
    content: bool = True
    recompute: int = 0
    teacher: str | None = None
    weights: str | None = None
    trust_checkpoint: bool = False
    device: str = "auto"
    seed: int = 0
    workers: int = 8  # threads hashing the dataset's files
    progress: bool = True


@dataclass
class VerifyReport:
    """The checks that passed, in order: one line each for people, and their numbers for scripts."""

    path: str
    checks: list[dict] = field(default_factory=list)

    def passed(self, check: str, line: str, **details) -> None:
        self.checks.append({"check": check, "ok": True, "message": line, **details})

    @property
    def lines(self) -> list[str]:
        return [check["message"] for check in self.checks]

    def to_dict(self) -> dict:
        return {"ok": True, "path": self.path, "checks": self.checks}


class ContentChanged(ValueError):
    """Samples whose source bytes differ from the digests a cache recorded; `details` lists them all."""

    def __init__(self, message: str, changed: list[str]):
        super().__init__(message)
        self.details = {"changed": changed}


def verify_cache(config: VerifyConfig) -> VerifyReport:
    """Run the checks in order, raising at the first failure; returns the checks passed."""
    if (config.teacher or config.weights) and not config.recompute:
        raise ValueError("--teacher and --weights choose the teacher for --recompute N; add --recompute")
    bars = progress.factory(config.progress)
    report = VerifyReport(config.path)
    info = store.read_info(config.path)
    with _phase(bars, "verifying blocks", info.layout.num_samples) as bar:
        stats = store.verify(config.path, on_block=bar.update)
    report.passed(
        "file",
        f"ok: {config.path} ({stats.num_blocks} blocks verified, {stats.fingerprint[:19]}…)",
        blocks=stats.num_blocks,
        fingerprint=stats.fingerprint,
        teacher_accuracy=stats.teacher_accuracy,
    )
    source = None
    if config.dataset:
        split = config.split or info.dataset.split
        source = open_dataset(config.dataset, split, config.data_root)
        require_same_samples(config.path, source)
        report.passed(
            "samples",
            f"ok: the same {len(source)} samples and labels as {config.dataset} ({split})",
            num_samples=len(source),
        )
        if config.content:
            _check_content(config, info, source, bars, report)
    if config.recompute:
        _check_teacher(config, source, report)
    return report


def _check_content(config: VerifyConfig, info: store.CacheInfo, source: DatasetSource, bars, report) -> None:
    """Every sample's source bytes against the digest the build recorded (names the ones that changed)."""
    stored = store.read_digests(config.path)
    if stored is None:
        report.passed(
            "content",
            f"note: content not checked: {config.path} was built before sample digests (rebuild it to have them)",
            checked=False,
        )
        return
    first = info.shard.start if info.shard else 0
    with _phase(bars, "hashing samples", len(stored)) as bar:
        fresh = content_digests(source, range(first, first + len(stored)), config.workers, bar.update)
    changed = [source.keys[first + i] for i in np.flatnonzero((fresh != stored).any(axis=1))]
    if changed:
        shown = ", ".join(key_text(k) for k in changed[:SHOWN]) + (", ..." if len(changed) > SHOWN else "")
        raise ContentChanged(
            f"{config.path}: {len(changed)} of {len(stored)} samples of {source.spec} changed content since the "
            f"build ({info.dataset.digests or 'sha256'} differs; e.g. {shown}): their targets belong to other "
            f"content; restore them, or rebuild the cache",
            changed,
        )
    report.passed(
        "content",
        f"ok: the content of all {len(stored)} samples is unchanged ({info.dataset.digests or 'sha256'})",
        checked=True,
    )


def content_digests(source: DatasetSource, indices: range, workers: int = 8, on_done=None) -> np.ndarray:
    """(n, 32) uint8 SHA-256 of the given samples' source bytes, hashed by `workers` threads (file reads and
    hashing release the GIL)."""
    out = np.zeros((len(indices), 32), dtype=np.uint8)
    step = 1024
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(indices), step):
            part = indices[start : start + step]
            for i, digest in enumerate(pool.map(_digest_of(source), part)):
                out[start + i] = np.frombuffer(digest, dtype=np.uint8)
            if on_done is not None:
                on_done(len(part))
    return out


def _digest_of(source: DatasetSource):
    def digest(index: int) -> bytes:
        with reading(source, index):
            return source.digest(index)

    return digest


def _check_teacher(config: VerifyConfig, source: DatasetSource | None, report: VerifyReport) -> None:
    result = recompute(
        config.path,
        config.recompute,
        config.teacher,
        config.weights,
        source=source,
        trust_checkpoint=config.trust_checkpoint,
        device=config.device,
        seed=config.seed,
        show_progress=config.progress,
    )
    if not result.ok:
        raise ValueError(_mismatch_message(config.path, result))
    report.passed(
        "teacher",
        f"ok: {'every teacher' if len(result.members) > 1 else 'the teacher'} reproduces {len(result.keys)} "
        f"samples x {result.num_views} view(s) "
        f"(largest difference {result.worst:.0%} of the tolerance)",
        samples=len(result.keys),
        worst_fraction_of_tolerance=result.worst,
    )


@contextlib.contextmanager
def _phase(bars, desc: str, total: int):
    bar = bars(desc, total)
    try:
        yield bar
    finally:
        bar.close()


def _mismatch_message(path, result: Recomputed) -> str:
    if result.unreplayable:  # the views themselves, before any teacher could be blamed
        key, view = result.unreplayable[0]
        samples = len({k for k, _ in result.unreplayable})
        return (
            f"{path}: the views do not replay: {samples} of {len(result.keys)} samples came out different when made "
            f"twice from their stored parameters (first: {key_text(key)} view {view}); the augmentation draws from "
            f"unseeded randomness or process state, so no teacher could reproduce the stored targets: fix it to draw "
            f"only from the rng `sample` is given, and rebuild the cache"
        )
    key, view, difference, allowed, member, what = result.mismatches[0]
    samples = len({m[0] for m in result.mismatches})
    who = f"teacher {member}'s" if len(result.members) > 1 else "the teacher's"
    measure = "|difference|" if what == "logits" else "1 - cosine"
    return (
        f"{path}: {who} {what} differ from the stored ones for {samples} of {len(result.keys)} "
        f"samples (first: {key_text(key)} view {view}, {measure} {difference:.3g} > {allowed:.3g}); the cache "
        f"was built with another teacher, weights or preprocessing, or its data was altered"
    )
