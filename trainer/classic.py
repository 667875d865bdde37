"""Classic-ML students: scikit-learn estimators trained on a cache's soft targets (`sklearn:NAME`).

    trainer fit --cache cache.h5 --student sklearn:logistic --out runs/logistic
    trainer fit --cache cache.h5 --student sklearn:linear_svm --out runs/svm

The inputs are the student's views (the cache's replayed views, or the labelled data's), normalised
and flattened into feature vectors. Soft targets become sample weights, a standard way to fit a
model that only takes hard labels to a distribution: every sample is repeated once per class c with
the weight its loss gives c (`Loss.class_weights` in `trainer.losses`: for KD `alpha * p_c + (1 - alpha)
* [c == label]`, p = softmax(teacher logits / T); the teacher's arg-max for `hard`; the label for
`ce`). This module is one kind of student beside the torch ones: it shares the set-up's `load_data`
with the engine, and `trainer.fit` sends `sklearn:` students here. Every stored view of a multi-view
cache is one sample. The fitted estimator (a StandardScaler + the model) is saved as `model.joblib`
and evaluated like any student; summary.json has the same fields. scikit-learn is an optional extra
(`softlabels.extras`).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from softlabels import store
from softlabels.extras import install_hint
from softlabels.views import Normalize
from trainer import checkpoints
from trainer.config import FitConfig, check_config
from trainer.data import eval_dataset, held_out_name
from trainer.losses import Objective
from trainer.setup import load_data

PREFIX = "sklearn:"
ESTIMATORS = ("logistic", "linear_svm")
MIN_WEIGHT = 1e-4  # classes whose weight is below this are left out of the repeated rows


def is_classic(spec: str) -> bool:
    return spec.startswith(PREFIX)


def make_estimator(spec: str, seed: int):
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC
    except ImportError:
        raise ValueError(f"{spec} needs scikit-learn: {install_hint('sklearn')}") from None
    name = spec[len(PREFIX) :]
    if name == "logistic":
        model = LogisticRegression(max_iter=2000, random_state=seed)
    elif name == "linear_svm":
        model = LinearSVC(random_state=seed, max_iter=5000)
    else:
        raise ValueError(
            f"unknown scikit-learn student {spec!r}; choose one of: {', '.join(PREFIX + e for e in ESTIMATORS)}"
        )
    return make_pipeline(StandardScaler(), model)


def features(dataset, items, prep) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(X (n, F) float32, labels (n,), teacher logits (n, C) or None) of the dataset's `items`."""
    normalize = Normalize(prep)
    xs, labels, logits = [], [], []
    for item in items:
        x, label, *rest = dataset[item]
        if isinstance(x, dict) or not isinstance(x, torch.Tensor):
            raise ValueError(
                f"scikit-learn students take tensor samples (images or feature vectors), not {type(x).__name__} samples"
            )
        x = normalize(x[None])[0] if x.ndim == 3 else x
        xs.append(x.reshape(-1).numpy())
        labels.append(int(label))
        if rest:
            logits.append(rest[0].numpy())
    return np.stack(xs), np.asarray(labels), np.stack(logits) if logits else None


def sample_weights(labels: np.ndarray, logits: np.ndarray | None, objective: Objective, num_classes: int):
    """Rows repeated per class with their weights: (row index, class, weight) for the estimator.

    The loss says how its targets weigh each class (`Loss.class_weights`); without teacher logits
    (learning from labels) every row keeps its label.
    """
    if logits is None:
        n = len(labels)
        return np.arange(n), labels, np.ones(n)
    weights = objective.loss.class_weights(labels, logits, num_classes)
    rows, classes = np.nonzero(weights > MIN_WEIGHT)
    return rows, classes, weights[rows, classes]


class MissingClassWarning(UserWarning):
    """A class has no training samples: a scikit-learn student learns it only from teacher targets, if at all."""


def check_classes(labels: np.ndarray, fitted: np.ndarray, names: list[str]) -> None:
    """Refuse targets of fewer than two classes (scikit-learn cannot fit them) and warn, naming them,
    about classes without a training sample."""
    present = np.unique(fitted)
    if len(present) < 2:
        only = ", ".join(names[int(c)] for c in present) or "none"
        raise ValueError(
            f"scikit-learn students need training samples of at least two classes; the training targets hold "
            f"only class {only} (of {', '.join(names)}): train on more data (a larger --subset, another split)"
        )
    absent = sorted(set(range(len(names))) - set(np.unique(labels).tolist()))
    if absent and (labels != store.NO_LABEL).any():  # unlabelled data learns every class from the teacher
        warnings.warn(
            f"class {', '.join(names[c] for c in absent)} has no training samples: the student learns it from "
            f"teacher targets alone, if at all; train on data with samples of every class",
            MissingClassWarning,
            stacklevel=2,
        )


def check_classic(config: FitConfig) -> None:
    """What a scikit-learn student cannot do with `config`, refused before any data is read (a sweep
    checks every run with it before the first trains)."""
    check_config(config)
    if config.objective.teacher:
        raise ValueError("scikit-learn students learn from a cache or from labels, not from an online --teacher")
    if len(config.runtime.cache) > 1:
        raise ValueError(
            f"scikit-learn students learn from one cache; {len(config.runtime.cache)} are given: train a torch "
            f"student on them together, or pass one --cache"
        )
    if config.runtime.probe or config.runtime.probe_teacher:
        raise ValueError(
            "--probe scores a torch student's penultimate features; a scikit-learn student has none: leave out "
            "--probe and --probe-teacher"
        )
    # The loss says whether it can weigh classes (an embedding loss or a sum of losses cannot).
    config.make_objective().loss.class_weights(np.zeros(1, np.int64), np.zeros((1, 2), np.float32), 2)


def fit_classic(config: FitConfig) -> dict:
    """Fit a scikit-learn student as `trainer.fit` would train a torch one; returns the summary."""
    import joblib  # comes with scikit-learn, an optional extra

    check_classic(config)
    estimator = make_estimator(config.model.student, config.optim.seed)
    out = Path(config.runtime.out)
    if (out / "summary.json").exists() and not config.runtime.overwrite:
        raise FileExistsError(f"{out} already holds a run; pass --overwrite or choose another --out")
    started = time.perf_counter()
    data, _, prep = load_data(config)
    views = data.schedule.num_views if data.schedule else 1
    items = [(int(i), v, 0) for i in data.indices for v in range(views)] if data.cache else data.indices.tolist()
    x, labels, logits = features(data.dataset, items, prep)
    objective = config.make_objective()
    rows, classes, weights = sample_weights(labels, logits, objective, len(data.classes))
    check_classes(labels, classes, data.classes)
    last = estimator.steps[-1][0]
    estimator.fit(x[rows], classes, **{f"{last}__sample_weight": weights, "standardscaler__sample_weight": weights})
    fit_seconds = time.perf_counter() - started
    train_accuracy = float((estimator.predict(x) == labels).mean()) if data.source.labelled else None
    held_out = eval_dataset(
        config.runtime.eval_dataset, data.source, prep, config.runtime.data_root, config.runtime.download, data.classes
    )
    test_accuracy = None
    if held_out is not None:
        test_x, test_labels, _ = features(held_out, range(len(held_out)), prep)
        test_accuracy = float((estimator.predict(test_x) == test_labels).mean())
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, out / "model.joblib")
    summary = {
        "config": config.to_dict(),
        "student": config.model.student,
        "loss": objective.name,
        "epochs": 1,
        "finished": True,
        "test_accuracy": test_accuracy,
        "eval_set": held_out_name(held_out) if held_out is not None else None,
        "best_accuracy": test_accuracy,
        "best_epoch": None,
        "train_accuracy": train_accuracy,
        "train_loss": None,
        "wall_seconds": round(fit_seconds, 3),
        "images_per_second": round(len(x) / fit_seconds, 1),
        "num_features": int(x.shape[1]),
        "num_rows_fitted": int(len(rows)),
        "cache_fingerprint": data.cache.fingerprint if data.cache else None,
        "teacher_accuracy": data.cache.teacher_accuracy if data.cache else None,
        "model": "model.joblib",
    }
    checkpoints.write_json_atomic(summary, out / "summary.json")
    return summary
