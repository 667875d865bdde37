"""Evaluation without a classifier: how much a model's features know about labels they were never
trained on, measured on a labelled set by a k-NN vote and a linear probe (`PROBES`).

The labelled set is split in two by position (`split_halves`: even rows fit, odd rows score, so a
class-sorted set keeps every class on both sides); nothing else is learnt from it. Both probes are
closed-form and deterministic, so a run's numbers repeat exactly:
- `knn`: cosine similarity to every fitting row, the `k` nearest vote for their class weighted by
  their similarity (DINO's weighted k-NN without the temperature), ties to the lower class index;
- `linear`: ridge regression of one-hot labels on the standardised features plus an unshrunk bias,
  closed form, predicted class = arg-max; the penalty is the one of `RIDGES` with the least
  leave-one-out squared error on the fitting rows (exact, from one SVD, as scikit-learn's
  RidgeClassifierCV chooses it). One fixed penalty was measured to be wrong for some widths: on 584
  rows of 384-D sentence embeddings 1e-3 scored 56.6% and 1.0 scored 70.0% (BENCHMARKS.md, "text
  encoder"), while 32-D features barely moved.

`neighbour_overlap` compares two models' features of the same samples without labels: the share of
each sample's k cosine-nearest neighbours (among the other samples) that both agree on, averaged.

numpy only: `softlabels inspect` scores a teacher's stored outputs with it, the trainer a student's
penultimate features (`softlabels.models.features`).
"""

from __future__ import annotations

import numpy as np

PROBES = ("knn", "linear")
DEFAULT_K = 10
RIDGES = tuple(10.0 ** np.arange(-4.0, 2.5, 0.5))  # penalties tried, x rows (features are standardised)
CHUNK = 1024  # scoring rows compared with the fitting rows at once (memory: CHUNK x n_fit floats)


def split_halves(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(fitting rows, scoring rows) of a labelled set of `count` rows: even and odd positions."""
    rows = np.arange(count)
    return rows[0::2], rows[1::2]


def knn_predict(
    fit_x: np.ndarray, fit_y: np.ndarray, x: np.ndarray, num_classes: int, k: int = DEFAULT_K
) -> np.ndarray:
    """The class of each row of `x` by a similarity-weighted vote of its `k` cosine-nearest fitting rows."""
    k = min(k, len(fit_x))
    fit_n = _unit(fit_x)
    predictions = []
    for start in range(0, len(x), CHUNK):
        similarity = _unit(x[start : start + CHUNK]) @ fit_n.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.take_along_axis(similarity, nearest, axis=1)
        votes = np.zeros((len(similarity), num_classes))
        np.add.at(votes, (np.arange(len(similarity))[:, None], fit_y[nearest]), weights)
        predictions.append(votes.argmax(axis=1))
    return np.concatenate(predictions) if predictions else np.zeros(0, dtype=np.int64)


def linear_predict(fit_x: np.ndarray, fit_y: np.ndarray, x: np.ndarray, num_classes: int) -> np.ndarray:
    """The class of each row of `x` by ridge regression of one-hot labels on standardised features,
    the penalty chosen by leave-one-out error on the fitting rows (`ridge_fit`)."""
    mean, std = fit_x.mean(axis=0), fit_x.std(axis=0) + 1e-6
    weights, bias = ridge_fit((fit_x - mean) / std, np.eye(num_classes)[fit_y])
    return (((x - mean) / std) @ weights + bias).argmax(axis=1)


def ridge_fit(z: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, C) weights and (C,) bias of ridge regression of `targets` on zero-mean features `z` (n, D),
    with the penalty of `RIDGES` (x n) whose exact leave-one-out squared error is least; the bias is
    not shrunk (the targets are centred instead)."""
    n = len(z)
    bias = targets.mean(axis=0)
    centred = targets - bias
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    projected = u.T @ centred  # (r, C)

    def loo_error(ridge: float) -> float:
        shrink = s**2 / (s**2 + ridge * n)  # (r,)
        fitted = u @ (shrink[:, None] * projected)
        leverage = (u**2) @ shrink + 1 / n  # the hat matrix's diagonal, the bias included
        return float((((centred - fitted) / np.maximum(1 - leverage, 1e-12)[:, None]) ** 2).sum())

    ridge = RIDGES[int(np.argmin([loo_error(r) for r in RIDGES]))]
    factor = s / (s**2 + ridge * n)
    return vt.T @ (factor[:, None] * projected), bias


def probe_accuracy(
    features: np.ndarray, labels: np.ndarray, kinds: tuple[str, ...], num_classes: int, k: int = DEFAULT_K
) -> dict[str, float]:
    """`probe_<kind>`: the accuracy of each probe in `kinds`, fit on the even rows of a labelled set's
    (n, D) `features`, scored on the odd rows."""
    unknown = [kind for kind in kinds if kind not in PROBES]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; choose from: {', '.join(PROBES)}")
    if len(features) < 2:
        raise ValueError(f"a probe needs at least 2 labelled samples, got {len(features)}")
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    labels = np.asarray(labels, dtype=np.int64)
    fit, score = split_halves(len(x))
    results = {}
    for kind in kinds:
        if kind == "knn":
            predicted = knn_predict(x[fit], labels[fit], x[score], num_classes, k)
        else:
            predicted = linear_predict(x[fit], labels[fit], x[score], num_classes)
        results[f"probe_{kind}"] = float((predicted == labels[score]).mean())
    return results


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = DEFAULT_K) -> float:
    """Mean over rows of |a's k nearest rows ∩ b's k nearest rows| / k: two (n, D_a) and (n, D_b)
    feature sets of the same n samples, cosine similarity, each row's own excluded (1.0: the same
    neighbourhoods; about k / (n - 1) for unrelated features)."""
    if len(a) != len(b):
        raise ValueError(f"neighbour overlap compares features of the same samples: got {len(a)} and {len(b)} rows")
    if len(a) < 2:
        raise ValueError(f"neighbour overlap needs at least 2 samples, got {len(a)}")
    k = min(k, len(a) - 1)
    a_n, b_n = (
        _unit(np.asarray(a, np.float64).reshape(len(a), -1)),
        _unit(np.asarray(b, np.float64).reshape(len(b), -1)),
    )
    shared = 0
    for start in range(0, len(a), CHUNK):
        rows = np.arange(start, min(start + CHUNK, len(a)))
        masks = []
        for x in (a_n, b_n):
            similarity = x[rows] @ x.T
            similarity[np.arange(len(rows)), rows] = -np.inf  # a sample is not its own neighbour
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
            mask = np.zeros(similarity.shape, dtype=bool)
            np.put_along_axis(mask, nearest, True, axis=1)
            masks.append(mask)
        shared += int((masks[0] & masks[1]).sum())
    return shared / (k * len(a))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
