"""The numbers of `softlabels inspect`: accuracy, calibration (reliability, a fitted temperature), confidence,
entropy, coverage of the top classes, agreement across views and across teachers; numpy only."""

from __future__ import annotations

import numpy as np

from softlabels.cache import softmax

DEFAULT_TEMPERATURES = (1.0, 2.0, 4.0)
COVERAGE_K = (1, 3, 5, 10)
CURVE_K = 20  # cumulative mass is plotted for the top 1..20 classes
MAX_LOGITS = 1 << 25  # floats of dense logits held at once (128 MiB)
FIT_LOGITS = 1 << 22  # floats used to fit the temperature
T_RANGE = (0.05, 20.0)
TOP_CONFUSIONS = 10


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / np.float32(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)
    scaled -= np.log(np.exp(scaled).sum(axis=-1, keepdims=True))
    return scaled


def entropy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Entropy in nats of softmax(logits / T), one per row."""
    log_p = log_softmax(logits, temperature)
    return -(np.exp(log_p) * log_p).sum(axis=-1)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    log_p = log_softmax(logits, temperature)
    return float(-np.take_along_axis(log_p, labels[:, None], axis=-1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, dict]:
    """The T minimising the NLL of softmax(logits / T): a log-spaced grid, then golden-section search
    around its best point (the NLL is unimodal in 1/T). Returns T and the grid's NLL curve."""
    step = max(1, logits.size // FIT_LOGITS)
    logits, labels = logits[::step], labels[::step]
    grid = np.geomspace(*T_RANGE, 41)
    curve = [nll(logits, labels, t) for t in grid]
    best = int(np.argmin(curve))
    low, high = np.log(grid[max(best - 1, 0)]), np.log(grid[min(best + 1, len(grid) - 1)])
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(30):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(logits, labels, np.exp(a)) < nll(logits, labels, np.exp(b)):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2)), {"temperatures": grid.tolist(), "nll": curve}


def temperature_limit(temperature: float) -> str | None:
    """`lower`/`upper` when the fit ran into the end of the searched range (the NLL keeps falling)."""
    if temperature <= T_RANGE[0] * 1.01:
        return "lower"
    return "upper" if temperature >= T_RANGE[1] * 0.99 else None


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int) -> dict:
    """Equal-width confidence bins: count, mean confidence and accuracy of each; ECE over them."""
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf, accuracy = conf_sum / count, correct_sum / count
    ece = float(np.abs(correct_sum - conf_sum).sum() / max(len(confidence), 1))
    return {
        "ece": ece,
        "bins": [
            {
                "low": i / bins,
                "high": (i + 1) / bins,
                "count": int(count[i]),
                "confidence": _number(mean_conf[i]),
                "accuracy": _number(accuracy[i]),
            }
            for i in range(bins)
        ],
    }


def accuracy_section(pred: np.ndarray, labels: np.ndarray, classes: list[str]) -> tuple[dict, np.ndarray]:
    """Accuracy, per-class accuracy and the most frequent confusions; also the (C, C) confusion matrix
    (rows: true class, columns: predicted)."""
    c = len(classes)
    confusion = np.bincount(labels * c + pred, minlength=c * c).reshape(c, c)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / support
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1][:TOP_CONFUSIONS]
    top = [
        {
            "true": classes[i],
            "predicted": classes[j],
            "count": int(off[i, j]),
            "fraction_of_true": float(off[i, j] / support[i]),
        }
        for i, j in zip(*np.unravel_index(order, off.shape))
        if off[i, j] > 0
    ]
    section = {
        "accuracy": float((pred == labels).mean()),
        "per_class": {name: _number(per_class[i]) for i, name in enumerate(classes)},
        "support": {name: int(support[i]) for i, name in enumerate(classes)},
        "top_confusions": top,
    }
    return section, confusion


def confidence_section(confidence: np.ndarray, correct: np.ndarray, ent: np.ndarray, num_classes: int) -> dict:
    conf_edges = np.linspace(0, 1, 21)
    ent_edges = np.linspace(0, max(np.log(num_classes), 1e-6), 21)
    return {
        "mean": float(confidence.mean()),
        "mean_correct": _number(confidence[correct].mean() if correct.any() else np.nan),
        "mean_wrong": _number(confidence[~correct].mean() if (~correct).any() else np.nan),
        "histogram": _split_histogram(confidence, correct, conf_edges),
        "entropy_mean": float(ent.mean()),
        "entropy_histogram": _split_histogram(ent, correct, ent_edges),
    }


def _split_histogram(values: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> dict:
    clipped = np.clip(values, edges[0], edges[-1])
    return {
        "edges": edges.tolist(),
        "correct": np.histogram(clipped[correct], edges)[0].tolist(),
        "wrong": np.histogram(clipped[~correct], edges)[0].tolist(),
    }


def temperature_section(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """Soft targets at T: entropy (histogram, mean), top-1 and true-class probability, top-k mass."""
    probs = softmax(logits, temperature)
    ent = entropy(logits, temperature)
    k_max = min(CURVE_K, probs.shape[-1])
    top = -np.sort(-np.partition(probs, probs.shape[-1] - k_max, axis=-1)[:, -k_max:], axis=-1)
    cumulative = np.cumsum(top, axis=-1).mean(axis=0)
    edges = np.linspace(0, max(np.log(probs.shape[-1]), 1e-6), 31)
    return {
        "temperature": float(temperature),
        "entropy_mean": float(ent.mean()),
        "entropy_fraction_of_max": float(ent.mean() / max(np.log(probs.shape[-1]), 1e-12)),
        "entropy_histogram": {
            "edges": edges.tolist(),
            "counts": np.histogram(np.clip(ent, 0, edges[-1]), edges)[0].tolist(),
        },
        "max_probability_mean": float(top[:, 0].mean()),
        "true_class_probability_mean": float(np.take_along_axis(probs, labels[:, None], axis=-1).mean()),
        "topk_mass_curve": cumulative.tolist(),
    }


def coverage_section(curve: list[float], num_classes: int, stored_k: int | None) -> dict:
    """Mean probability mass (T = 1) in the top-k classes, for the usual k."""
    mass = {str(k): curve[k - 1] for k in COVERAGE_K if k <= len(curve)}
    return {"mass": mass, "exact_up_to_k": stored_k or num_classes}


def views_section(logits: np.ndarray, labels: np.ndarray, seeds: list[int]) -> dict | None:
    """Multi-view caches: how often views agree with view 0's arg-max, and how far apart their
    distributions are (mean pairwise KL at T = 1, over ordered pairs of distinct views)."""
    n, v, _ = logits.shape
    if v < 2:
        return None
    pred = logits.argmax(axis=-1)
    agree = pred[:, 1:] == pred[:, :1]
    log_p = log_softmax(logits)
    p = np.exp(log_p)
    # sum over v != w of KL(p_v || p_w) = V * sum_v p_v.log p_v - (sum_v p_v).(sum_w log p_w)
    pair_sum = v * (p * log_p).sum(axis=(1, 2)) - (p.sum(axis=1) * log_p.sum(axis=1)).sum(axis=-1)
    kl = np.maximum(pair_sum / (v * (v - 1)), 0)
    kl_edges = np.linspace(0, max(float(np.quantile(kl, 0.99)), 1e-3), 31)
    return {
        "num_views": v,
        "seeds": seeds,
        "agree_with_view0": float(agree.mean()),
        "agree_with_view0_per_view": [1.0] + agree.mean(axis=0).tolist(),
        "all_views_agree": float(agree.all(axis=1).mean()),
        "accuracy_per_view": (pred == labels[:, None]).mean(axis=0).tolist(),
        "majority_vote_accuracy": float((_majority(pred, logits.shape[-1]) == labels).mean()),
        "mean_pairwise_kl": float(kl.mean()),
        "other_views_agreeing": np.bincount(agree.sum(axis=1), minlength=v).tolist(),  # samples with 0..V-1
        "kl_histogram": {
            "edges": kl_edges.tolist(),
            "counts": np.histogram(np.clip(kl, 0, kl_edges[-1]), kl_edges)[0].tolist(),
        },
    }


def _majority(pred: np.ndarray, num_classes: int) -> np.ndarray:
    votes = np.zeros((len(pred), num_classes), dtype=np.int64)
    np.add.at(votes, (np.arange(len(pred))[:, None], pred), 1)
    return votes.argmax(axis=1)


def _number(value) -> float | None:
    """A float for JSON, None for NaN (a class with no samples has no accuracy)."""
    value = float(value)
    return None if np.isnan(value) else value
