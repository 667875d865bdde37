"""What `softlabels inspect` says without a score against labels, and about stored embeddings.

- `predictions_section`: an unlabelled cache's teacher predictions: confidence, entropy, the histogram
  of the classes it predicts, soft-target entropy at the asked temperatures (no accuracy: that needs
  labels).
- `embedding_section`: a cache's stored embeddings (view 0): dimension, norm distribution, a 2-D PCA
  projection (the picture), and with labels the k-NN and linear-probe accuracy of `softlabels.probes`,
  the code the trainer's `--probe` uses.
"""

from __future__ import annotations

import numpy as np

from softlabels.cache import softmax
from softlabels.probes import PROBES, probe_accuracy
from softlabels.report.statistics import entropy

NO_LABELS = "no labels: accuracy needs a labelled cache"
MAX_POINTS = 2000  # points of the PCA scatter kept in report.json (evenly spaced samples)
BINS = 20


def _histogram(values: np.ndarray, bins: int = BINS) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def predictions_section(logits: np.ndarray, classes: list[str], temperatures: list[float]) -> dict:
    """(n, C) teacher logits (every view one prediction) described without labels."""
    confidence = softmax(logits).max(axis=-1)
    ent = entropy(logits)
    counts = np.bincount(logits.argmax(axis=-1), minlength=len(classes))
    return {
        "accuracy": NO_LABELS,
        "predictions": int(len(logits)),
        "confidence": {"mean": float(confidence.mean()), "histogram": _histogram(confidence)},
        "entropy": {
            "mean": float(ent.mean()),
            "fraction_of_max": float(ent.mean() / np.log(len(classes))) if len(classes) > 1 else 0.0,
            "histogram": _histogram(ent),
        },
        "predicted_classes": {name: int(c) for name, c in zip(classes, counts)},
        "temperatures": [
            {
                "temperature": t,
                "entropy_mean": float(entropy(logits, t).mean()),
                "max_probability_mean": float(softmax(logits, t).max(axis=-1).mean()),
            }
            for t in temperatures
        ],
    }


def embedding_section(
    embeddings: np.ndarray, labels: np.ndarray | None, num_classes: int, features: str = "stored embeddings, view 0"
) -> dict:
    """(n, D) stored embeddings (what `features` says they are): their size and spread, a PCA picture,
    and with labels (one per row) the probes' accuracy (fit on the even rows, scored on the odd rows)."""
    x = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    centred = x - x.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2 / max(float((singular**2).sum()), 1e-30)
    keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), MAX_POINTS)).round().astype(np.int64))
    points = centred[keep] @ axes[:2].T
    section: dict = {
        "features": features,
        "samples": int(len(x)),
        "dimension": int(x.shape[1]),
        "norm": {
            "mean": float(norms.mean()),
            "std": float(norms.std()),
            "min": float(norms.min()),
            "max": float(norms.max()),
            "histogram": _histogram(norms),
        },
        "pca": {
            "explained_2": float(variance[:2].sum()),
            "explained_10": float(variance[:10].sum()),
            "points": np.round(points, 5).tolist(),
            "labels": None if labels is None else [int(v) for v in labels[keep]],
        },
    }
    if labels is None:
        section["probes"] = NO_LABELS
        return section
    section.update(probe_accuracy(x.astype(np.float32), labels, PROBES, num_classes))
    return section
