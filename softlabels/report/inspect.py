"""`softlabels inspect`: what a teacher knows, as numbers (report.json), a short report (report.md)
and plots (`softlabels.report.plots`): accuracy per class, confusions, confidence and entropy, calibration
with the temperature that fits it best, top-k probability mass, agreement between views, and the
entropy of the soft targets at the temperatures a user considers.

Every view is one teacher prediction: statistics pool all views unless they say "view 0". At most
`max_samples` samples are used (evenly spaced rows, so class-sorted datasets keep every class), and
never more than `MAX_LOGITS` floats, so a 1000-class cache of a million images stays cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from softlabels import progress, store
from softlabels.cache import softmax
from softlabels.catalog import short_spec, teacher_text
from softlabels.ensemble import Ensemble
from softlabels.probes import probe_accuracy
from softlabels.report.markdown import render_markdown
from softlabels.report.statistics import (
    DEFAULT_TEMPERATURES,
    MAX_LOGITS,
    accuracy_section,
    confidence_section,
    coverage_section,
    entropy,
    fit_temperature,
    nll,
    reliability,
    temperature_limit,
    temperature_section,
    views_section,
)
from softlabels.report.unscored import NO_LABELS, embedding_section, predictions_section


@dataclass(frozen=True)
class InspectConfig:
    """Options of `softlabels inspect`."""

    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    max_samples: int = 50_000
    bins: int = 15  # reliability-diagram bins (equal width), also used for the ECE
    progress: bool = False  # a bar over the cache's blocks while the sample is read
    probes: tuple[str, ...] = ()  # of softlabels.probes.PROBES: the stored outputs scored without a classifier


@dataclass
class Sample:
    """The rows a report is computed on: dense float32 logits (n, V, C) and their labels (n,), and the
    stored embeddings of view 0 (n, D) where the cache has them."""

    rows: np.ndarray
    labels: np.ndarray
    logits: np.ndarray  # the teacher's, or the mean-prob ensemble's (T=1) of several teachers; (n, V, 0) without
    members: np.ndarray | None = None  # several teachers: (n, V, M, C)
    embeddings: np.ndarray | None = None  # view 0 (of the first teacher, with several)

    @property
    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(n * V, C) logits and their (n * V,) labels: one row per teacher prediction."""
        n, v, c = self.logits.shape
        return self.logits.reshape(n * v, c), np.repeat(self.labels, v)


def load_sample(path, info: store.CacheInfo, max_samples: int, show_progress: bool = False) -> Sample:
    """Evenly spaced rows of a complete cache, top-k expanded to dense logits."""
    layout = info.layout
    per_row = layout.num_views * layout.num_classes * layout.num_teachers
    limit = max(1, min(max_samples, MAX_LOGITS // per_row, layout.num_samples))
    rows = np.unique(np.linspace(0, layout.num_samples - 1, limit).round().astype(np.int64))
    classes = layout.num_classes if layout.has_logits else 0
    logits = np.empty((len(rows), *layout.rows[1:], classes), dtype=np.float32)
    embeddings = np.empty((len(rows), layout.embedding_dim), dtype=np.float32) if layout.embedding else None
    labels = np.empty(len(rows), dtype=np.int64)
    filled = 0
    with progress.bar(total=layout.num_samples, desc="reading", unit="row", enabled=show_progress) as bar:
        for start, stop, block_labels, block in store.iter_rows(path):
            pick = rows[(rows >= start) & (rows < stop)] - start
            if len(pick):
                taken = block.take(pick)
                if layout.has_logits:
                    logits[filled : filled + len(pick)] = taken.dense()
                if embeddings is not None:
                    stored = taken.embeddings()[:, 0]  # view 0: (n, D), or (n, M, D)
                    embeddings[filled : filled + len(pick)] = stored if stored.ndim == 2 else stored[:, 0]
                labels[filled : filled + len(pick)] = block_labels[pick]
                filled += len(pick)
            bar.update(stop - start)
    if layout.num_teachers == 1 or not layout.has_logits:
        return Sample(rows, labels, logits, embeddings=embeddings)
    return Sample(rows, labels, Ensemble().combine(logits), members=logits, embeddings=embeddings)


# ----------------------------------------------------------------------------- the report


def inspect_cache(path, out, config: InspectConfig = InspectConfig()) -> dict:
    """Compute the report of a complete cache and write report.json, report.md and PNG plots to `out`."""
    report, confusion = compute_report(path, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from softlabels.report.plots import draw_plots  # matplotlib only when pictures are asked for

    report["plots"] = draw_plots(report, confusion, out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def compute_report(path, config: InspectConfig = InspectConfig()) -> tuple[dict, np.ndarray | None]:
    """(the JSON-able report, the (C, C) confusion matrix) of a complete cache. An unlabelled cache, or
    one of embeddings alone, has no confusion matrix (None) and a report of what needs no labels:
    `labelled` false, `predictions` (the teacher's outputs without accuracy) and/or `embedding`."""
    if any(not t > 0 for t in config.temperatures):
        raise ValueError(f"temperatures must be positive, got {list(config.temperatures)}")
    if config.max_samples < 1 or config.bins < 1:
        raise ValueError("max_samples and bins must be at least 1")
    info = store.read_complete_info(path)
    layout = info.layout
    sample = load_sample(path, info, config.max_samples, config.progress)
    if layout.labelled and layout.has_logits:
        report, confusion = _scored_report(path, info, sample, config)
    else:  # no labels, or no logits: what can be said without scoring predictions against labels
        report, confusion = _header(path, info, sample, info.classes), None
        report["labelled"] = layout.labelled
        if layout.has_logits:
            temperatures = sorted({1.0, *config.temperatures})
            report["predictions"] = predictions_section(_flat(sample.logits), info.classes, temperatures)
        if config.probes and not layout.labelled:
            report["probes"] = NO_LABELS
    if sample.embeddings is not None:
        labels = sample.labels if layout.labelled else None
        features = "stored embeddings, view 0"
        if layout.num_teachers > 1:  # embeddings are never mixed: the first teacher's, named
            features = f"stored embeddings of {info.member_names[0]}, teacher 0 of {layout.num_teachers}, view 0"
        report["embedding"] = embedding_section(sample.embeddings, labels, layout.num_classes, features)
    return report, confusion


def _flat(logits: np.ndarray) -> np.ndarray:
    return logits.reshape(-1, logits.shape[-1])


def _scored_report(path, info: store.CacheInfo, sample: Sample, config: InspectConfig) -> tuple[dict, np.ndarray]:
    """The report of a labelled cache of logits: the teacher scored against the labels."""
    logits, labels = sample.flat
    classes = info.classes
    pred = logits.argmax(axis=-1)
    accuracy, confusion = accuracy_section(pred, labels, classes)
    accuracy["view0"] = float((sample.logits[:, 0].argmax(axis=-1) == sample.labels).mean())
    accuracy["stored_teacher_accuracy"] = info.teacher_accuracy
    correct = pred == labels
    confidence = softmax(logits).max(axis=-1)
    fitted, curve = fit_temperature(logits, labels)
    temperatures = [temperature_section(logits, labels, t) for t in sorted({1.0, *config.temperatures})]
    report = _header(path, info, sample, classes)
    report.update(
        {
            "accuracy": accuracy,
            "confidence": confidence_section(confidence, correct, entropy(logits), len(classes)),
            "calibration": {
                "at_1": {
                    "temperature": 1.0,
                    "nll": nll(logits, labels, 1.0),
                    **reliability(confidence, correct, config.bins),
                },
                "fitted": {
                    "temperature": fitted,
                    "nll": nll(logits, labels, fitted),
                    "at_limit": temperature_limit(fitted),
                    **reliability(softmax(logits, fitted).max(axis=-1), correct, config.bins),
                },
                "nll_curve": curve,
            },
            "temperatures": temperatures,
            "coverage": coverage_section(temperatures[0]["topk_mass_curve"], len(classes), info.layout.topk),
            "views": views_section(sample.logits, sample.labels, info.view_seeds),
            "members": members_section(sample, info.member_names, config.bins),
            "probes": probe_section(sample, config.probes, len(classes)),
        }
    )
    return report, confusion


def _header(path, info: store.CacheInfo, sample: Sample, classes: list[str]) -> dict:
    layout = info.layout
    return {
        "cache": str(path),
        "name": Path(path).name,
        "teacher": teacher_text(info.teacher.to_dict()),
        "dataset": short_spec(str(info.dataset.spec)),
        "split": info.dataset.split,
        "classes": classes,
        "num_samples": layout.num_samples,
        "samples_used": int(len(sample.rows)),
        "num_views": layout.num_views,
        "storage": f"{layout.mode.label()}, compression {layout.compression}",
        "topk": layout.topk,
    }


def members_section(sample: Sample, names: list[str], bins: int) -> dict | None:
    """Several teachers: each one's accuracy, NLL and ECE at T=1, and how often pairs agree (top-1)."""
    if sample.members is None:
        return None
    labels = np.repeat(sample.labels, sample.members.shape[1])
    flat = sample.members.reshape(-1, *sample.members.shape[2:])  # (n * V, M, C)
    preds = flat.argmax(axis=-1)  # (n * V, M)
    members = []
    for m, name in enumerate(names):
        correct = preds[:, m] == labels
        members.append(
            {
                "name": name,
                "accuracy": float(correct.mean()),
                "nll": nll(flat[:, m], labels, 1.0),
                "ece": reliability(softmax(flat[:, m]).max(axis=-1), correct, bins)["ece"],
            }
        )
    agreement = [[float((preds[:, a] == preds[:, b]).mean()) for b in range(len(names))] for a in range(len(names))]
    ensemble = (sample.logits.reshape(-1, sample.logits.shape[-1]).argmax(axis=-1) == labels).mean()
    return {
        "teachers": members,
        "agreement": agreement,
        "ensemble_accuracy": float(ensemble),
        "ensemble": "mean-prob at T=1 (every other section describes it)",
    }


def probe_section(sample: Sample, kinds: tuple[str, ...], num_classes: int) -> dict | None:
    """The teacher's stored outputs of view 0 as features, scored by `softlabels.probes` (fit on the
    even rows of the sample, scored on the odd rows)."""
    if not kinds:
        return None
    return {
        "features": "stored logits, view 0",
        "samples": int(len(sample.rows)),
        **probe_accuracy(sample.logits[:, 0], sample.labels, kinds, num_classes),
    }
