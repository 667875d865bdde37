"""`softlabels inspect`: what a teacher knows, as numbers (report.json), a short report (report.md)
and plots (`softlabels.plots`): accuracy per class, confusions, confidence and entropy, calibration
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
from softlabels.probes import probe_accuracy

DEFAULT_TEMPERATURES = (1.0, 2.0, 4.0)
COVERAGE_K = (1, 3, 5, 10)
CURVE_K = 20  # cumulative mass is plotted for the top 1..20 classes
MAX_LOGITS = 1 << 25  # floats of dense logits held at once (128 MiB)
FIT_LOGITS = 1 << 22  # floats used to fit the temperature
T_RANGE = (0.05, 20.0)
TOP_CONFUSIONS = 10


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
    """The rows a report is computed on: dense float32 logits (n, V, C) and their labels (n,)."""

    rows: np.ndarray
    labels: np.ndarray
    logits: np.ndarray  # the teacher's, or the mean-prob ensemble's (T=1) of several teachers
    members: np.ndarray | None = None  # several teachers: (n, V, M, C)

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
    logits = np.empty((len(rows), *layout.rows[1:], layout.num_classes), dtype=np.float32)
    labels = np.empty(len(rows), dtype=np.int64)
    filled = 0
    with progress.bar(total=layout.num_samples, desc="reading", unit="row", enabled=show_progress) as bar:
        for start, stop, block_labels, block in store.iter_rows(path):
            pick = rows[(rows >= start) & (rows < stop)] - start
            if len(pick):
                logits[filled : filled + len(pick)] = block.take(pick).dense()
                labels[filled : filled + len(pick)] = block_labels[pick]
                filled += len(pick)
            bar.update(stop - start)
    if layout.num_teachers == 1:
        return Sample(rows, labels, logits)
    from softlabels.ensemble import Ensemble

    return Sample(rows, labels, Ensemble("mean-prob").combine(logits), members=logits)


# ----------------------------------------------------------------------------- the report


def inspect_cache(path, out, config: InspectConfig = InspectConfig()) -> dict:
    """Compute the report of a complete cache and write report.json, report.md and PNG plots to `out`."""
    report, confusion = compute_report(path, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from softlabels.plots import draw_plots  # matplotlib only when pictures are asked for

    report["plots"] = draw_plots(report, confusion, out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


def compute_report(path, config: InspectConfig = InspectConfig()) -> tuple[dict, np.ndarray]:
    """(the JSON-able report, the (C, C) confusion matrix) of a complete cache."""
    if any(not t > 0 for t in config.temperatures):
        raise ValueError(f"temperatures must be positive, got {list(config.temperatures)}")
    if config.max_samples < 1 or config.bins < 1:
        raise ValueError("max_samples and bins must be at least 1")
    info = store.read_complete_info(path)
    if not info.layout.labelled:
        raise ValueError(
            f"{path} is unlabelled: `inspect` scores the teacher against labels (accuracy, calibration, "
            f"probes); `softlabels info` describes the cache, and a cache of a labelled set can be inspected"
        )
    sample = load_sample(path, info, config.max_samples, config.progress)
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
                    "at_limit": _limit(fitted),
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


def _header(path, info: store.CacheInfo, sample: Sample, classes: list[str]) -> dict:
    from softlabels.catalog import short_spec, teacher_text

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


# ----------------------------------------------------------------------------- statistics


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


def _limit(temperature: float) -> str | None:
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


# ----------------------------------------------------------------------------- markdown


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


def render_markdown(report: dict) -> str:
    """report.md: the numbers that matter in one table, what they suggest, then the plots."""
    lines = [f"# Teacher report: {report['name']}", "", _scope(report), "", "| | |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in _key_numbers(report)]
    if report.get("members"):
        members = report["members"]
        lines += ["", "## Teachers", "", "| teacher | accuracy | NLL (T=1) | ECE (T=1) |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {m['name']} | {m['accuracy']:.2%} | {m['nll']:.3f} | {m['ece']:.2%} |" for m in members["teachers"]
        ]
        lines += [
            f"| ensemble (mean-prob) | {members['ensemble_accuracy']:.2%} | | |",
            "",
            "Top-1 agreement between teachers: "
            + "; ".join(
                f"{a['name']} / {b['name']} {members['agreement'][i][j]:.1%}"
                for i, a in enumerate(members["teachers"])
                for j, b in enumerate(members["teachers"])
                if j > i
            ),
        ]
    lines += ["", "## What this suggests", ""] + [f"- {text}" for text in _advice(report)]
    captions = {
        "accuracy.png": "Accuracy per class",
        "confusion.png": "Confusion matrix",
        "confidence.png": "Confidence and entropy",
        "calibration.png": "Calibration and temperature",
        "temperature.png": "Soft targets by temperature",
        "views.png": "Agreement between views",
    }
    for name in report.get("plots", []):
        lines += ["", f"## {captions.get(name, name)}", "", f"![{captions.get(name, name)}]({name})"]
        if name == "confusion.png" and report["accuracy"]["top_confusions"]:
            lines += [
                "",
                "| true class | predicted as | predictions | share of the class |",
                "| --- | --- | --- | --- |",
            ]
            lines += [
                f"| {c['true']} | {c['predicted']} | {c['count']} | {c['fraction_of_true']:.1%} |"
                for c in report["accuracy"]["top_confusions"]
            ]
    return "\n".join(lines) + "\n"


def _scope(report: dict) -> str:
    used = report["samples_used"]
    sampled = (
        "all samples" if used == report["num_samples"] else f"{used} evenly spaced samples of {report['num_samples']}"
    )
    return (
        f"Teacher {report['teacher']} on {report['dataset']} / {report['split']}: {report['num_samples']} samples "
        f"x {report['num_views']} view(s), {len(report['classes'])} classes, {report['storage']}. "
        f"Statistics over {sampled}, every view counted as one prediction."
    )


def _key_numbers(report: dict) -> list[tuple[str, str]]:
    acc, conf, cal = report["accuracy"], report["confidence"], report["calibration"]
    per_class = {k: v for k, v in acc["per_class"].items() if v is not None}
    worst = min(per_class, key=lambda name: per_class[name])
    best = max(per_class, key=lambda name: per_class[name])
    temps = report["temperatures"]
    probes = report.get("probes") or {}
    rows = [
        ("accuracy", f"{acc['accuracy']:.2%} (view 0: {acc['view0']:.2%})"),
        *(
            (f"{name.replace('_', ' ')} ({probes['features']})", f"{value:.2%}")
            for name, value in probes.items()
            if name.startswith("probe_")
        ),
        (
            "worst / best class",
            f"{worst} {per_class[worst]:.1%} / {best} {per_class[best]:.1%}",
        ),
        (
            "mean confidence",
            f"{conf['mean']:.3f} (right: {_fmt(conf['mean_correct'])}, wrong: {_fmt(conf['mean_wrong'])})",
        ),
        ("calibration at T = 1", f"ECE {cal['at_1']['ece']:.2%}, NLL {cal['at_1']['nll']:.3f}"),
        (
            "best temperature (NLL)",
            f"**T = {cal['fitted']['temperature']:.2f}**"
            + (" (end of the searched range)" if cal["fitted"]["at_limit"] else "")
            + f": ECE {cal['fitted']['ece']:.2%}, NLL {cal['fitted']['nll']:.3f}",
        ),
        (
            "mass in top-" + "/".join(report["coverage"]["mass"]),
            " / ".join(f"{m:.3f}" for m in report["coverage"]["mass"].values()),
        ),
        (
            "target entropy (nats)",
            ", ".join(
                f"T = {t['temperature']:g}: {t['entropy_mean']:.3f} ({t['entropy_fraction_of_max']:.0%} of max)"
                for t in temps
            ),
        ),
    ]
    if report["views"]:
        views = report["views"]
        rows.append(
            (
                "views agreeing with view 0",
                f"{views['agree_with_view0']:.1%} (all agree on "
                f"{views['all_views_agree']:.1%} of samples; mean pairwise KL {views['mean_pairwise_kl']:.4f} nats)",
            )
        )
    return rows


def _advice(report: dict) -> list[str]:
    fitted = report["calibration"]["fitted"]["temperature"]
    at_1 = report["calibration"]["at_1"]
    limit = report["calibration"]["fitted"]["at_limit"]
    if limit == "upper":
        calibration = (
            f"The NLL keeps falling up to T = {fitted:.0f}: a near-uniform guess predicts these labels as "
            f"well as the teacher does. It knows little about this split; distilling it is unlikely to help."
        )
    elif limit == "lower":
        calibration = (
            f"The NLL keeps falling down to T = {fitted:.2f}: the teacher is right on (almost) every sample "
            f"of this split, so calibration cannot pick a temperature here; use a held-out split."
        )
    elif fitted > 1.1:
        calibration = (
            f"Over-confident at T = 1 (ECE {at_1['ece']:.1%}): its probabilities are honest at "
            f"T = {fitted:.2f}. Soft targets at about that temperature carry its real uncertainty."
        )
    elif fitted < 0.9:
        calibration = (
            f"Under-confident at T = 1 (ECE {at_1['ece']:.1%}): its probabilities are honest at "
            f"T = {fitted:.2f}, i.e. sharper than its raw outputs."
        )
    else:
        calibration = f"Well calibrated at T = 1 (fitted T = {fitted:.2f}, ECE {at_1['ece']:.1%})."
    advice = [
        calibration,
        "Calibration is measured on this split. If the teacher was trained on it, it looks more accurate "
        "and confident here than on new data: inspect a cache of a held-out split to choose T.",
    ]
    outside = ", ".join(
        f"{1 - t['max_probability_mean']:.1%} at T = {t['temperature']:g}" for t in report["temperatures"]
    )
    uniform = [f"{t['temperature']:g}" for t in report["temperatures"] if t["entropy_fraction_of_max"] > 0.8]
    advice.append(
        f"Mass the soft targets put outside the top class (what distillation adds to labels), on average: "
        f"{outside}." + (f" At T = {', '.join(uniform)} they are close to uniform." if uniform else "")
    )
    if report["topk"]:
        advice.append(
            f"Top-{report['topk']} storage: probabilities beyond the {report['topk']} stored classes are "
            f"approximated (the tail mass is exact, split evenly), so entropies and masses past "
            f"top-{report['topk']} are estimates."
        )
    if report["views"]:
        views = report["views"]
        advice.append(
            f"Views disagree with view 0 on {1 - views['agree_with_view0']:.1%} of predictions, with a mean "
            f"pairwise KL of {views['mean_pairwise_kl']:.3f} nats: how much the targets depend on the view "
            f"(majority vote accuracy {views['majority_vote_accuracy']:.1%})."
        )
    return advice


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
