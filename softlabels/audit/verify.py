"""`softlabels verify`: the file's checksums, then optionally its samples (`--dataset`, their content
digests) and its teacher (`--recompute`), reported as one list of checks."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from softlabels import progress, store
from softlabels.audit.samples import SHOWN, require_same_samples
from softlabels.audit.teacher import Recomputed, recompute
from softlabels.data import DatasetSource, key_text, open_dataset
from softlabels.data.sample_errors import reading


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
