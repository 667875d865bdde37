"""The PNG figures of `softlabels inspect`, drawn from its report.

matplotlib's object API (`matplotlib.figure.Figure`): no pyplot and no backend chosen at import, so a
user's own matplotlib setup (a notebook, an interactive backend) is left as it is.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure

RIGHT, WRONG, ACCENT = "#3b7dd8", "#e0603a", "#444444"
NAMED_CLASSES = 40  # beyond this many classes, axes stop naming every class
DPI = 110


def draw_plots(report: dict, confusion: np.ndarray | None, out: Path) -> list[str]:
    """Write every figure that applies to `out`; returns their file names in report order."""
    figures = []
    if confusion is not None:  # scored against labels
        figures = [
            ("accuracy.png", lambda: accuracy_figure(report)),
            ("confusion.png", lambda: confusion_figure(report, confusion)),
            ("confidence.png", lambda: confidence_figure(report)),
            ("calibration.png", lambda: calibration_figure(report)),
            ("temperature.png", lambda: temperature_figure(report)),
        ]
    if report.get("views"):
        figures.append(("views.png", lambda: views_figure(report)))
    if report.get("predictions"):
        figures.append(("predictions.png", lambda: predictions_figure(report)))
    if report.get("embedding"):
        figures.append(("embedding.png", lambda: embedding_figure(report)))
    written = []
    for name, draw in figures:
        figure = draw()
        figure.savefig(out / name, dpi=DPI, bbox_inches="tight")
        written.append(name)
    return written


def _subplots(*grid, figsize):
    """(figure, axes) as pyplot.subplots gives them, without pyplot."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid)


def _count_scale(axis, counts) -> None:
    """Log-like y axis when counts span orders of magnitude (a strong teacher's histograms), else linear."""
    if max(counts, default=0) > 100:
        axis.set_yscale("symlog", linthresh=10)
        axis.set_ylim(0, max(counts) * 1.6)


def _title(figure, report: dict, what: str) -> None:
    figure.suptitle(
        f"{what} — {report['name']} ({report['teacher']} on {report['dataset']}/{report['split']})",
        fontsize=11,
        fontweight="bold",
    )


def accuracy_figure(report: dict):
    accuracy = report["accuracy"]
    names = list(accuracy["per_class"])
    values = np.array([np.nan if v is None else v for v in accuracy["per_class"].values()])
    if len(names) <= NAMED_CLASSES:
        figure, axis = _subplots(figsize=(8, 1.2 + 0.3 * len(names)))
        _class_bars(axis, names, values, list(accuracy["support"].values()), accuracy["accuracy"])
    else:
        figure, axis = _subplots(figsize=(8, 4))
        _sorted_classes(axis, names, values, accuracy["accuracy"])
    axis.set_title(f"per-class accuracy over all views; dashed: overall {accuracy['accuracy']:.2%}", fontsize=10)
    _title(figure, report, "Teacher accuracy")
    return figure


def _class_bars(axis, names, values, support, overall: float) -> None:
    positions = np.arange(len(names))[::-1]  # first class on top
    axis.barh(positions, values, color=[RIGHT if v >= overall else WRONG for v in values])
    axis.set_yticks(positions, names)
    for y, value, count in zip(positions, values, support):
        axis.text(min(value, 1) + 0.01, y, f"{value:.1%}  (n={count})", va="center", fontsize=8)
    axis.axvline(overall, color=ACCENT, linestyle="--", linewidth=1)
    axis.set_xlim(0, 1.2)
    axis.set_xlabel("accuracy (orange: below overall)")


def _sorted_classes(axis, names, values, overall: float) -> None:
    order = np.argsort(values)
    axis.plot(np.arange(len(values)), values[order], color=RIGHT)
    axis.axhline(overall, color=ACCENT, linestyle="--", linewidth=1)
    worst = "\n".join(f"{names[i]}: {values[i]:.1%}" for i in order[:8])
    axis.text(
        0.02,
        0.97,
        "worst classes\n" + worst,
        transform=axis.transAxes,
        va="top",
        fontsize=7,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
    )
    axis.set_xlabel("classes, sorted by accuracy")
    axis.set_ylabel("accuracy")


def confusion_figure(report: dict, confusion: np.ndarray):
    names = report["classes"]
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.45 * len(names), 12)
    figure, axis = _subplots(figsize=(size + 1.5, size))
    # A square-root colour scale: with a strong teacher the diagonal would otherwise hide every confusion.
    image = axis.imshow(rows, cmap="Blues", norm=PowerNorm(0.4, vmin=0, vmax=1))
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class (sqrt scale)")
    if len(names) <= NAMED_CLASSES:
        axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
        axis.set_yticks(range(len(names)), names)
    if len(names) <= 20:
        for (i, j), value in np.ndenumerate(rows):
            if value >= 0.005:
                axis.text(
                    j,
                    i,
                    f"{value:.0%}" if value >= 0.995 or value >= 0.1 else f"{value:.1%}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.5 else "black",
                )
    indexed = "" if len(names) <= NAMED_CLASSES else " (index)"
    axis.set_xlabel("predicted class" + indexed)
    axis.set_ylabel("true class" + indexed)
    axis.set_title(f"rows sum to 100%; accuracy {report['accuracy']['accuracy']:.2%}", fontsize=10)
    _title(figure, report, "Confusion matrix")
    return figure


def _stacked(axis, histogram: dict, xlabel: str) -> None:
    edges = np.array(histogram["edges"])
    widths = np.diff(edges)
    axis.bar(edges[:-1], histogram["correct"], widths, align="edge", color=RIGHT, label="right (arg-max = label)")
    axis.bar(
        edges[:-1], histogram["wrong"], widths, align="edge", bottom=histogram["correct"], color=WRONG, label="wrong"
    )
    axis.set_xlabel(xlabel)
    axis.set_ylabel(
        "predictions" + (" (log scale above 10)" if max(np.add(histogram["correct"], histogram["wrong"])) > 100 else "")
    )
    _count_scale(axis, np.add(histogram["correct"], histogram["wrong"]))
    axis.legend(fontsize=8)


def confidence_figure(report: dict):
    confidence = report["confidence"]
    figure, (left, right) = _subplots(1, 2, figsize=(11, 4))
    _stacked(left, confidence["histogram"], "confidence: largest probability at T = 1")
    left.set_title(f"confidence (mean {confidence['mean']:.3f})", fontsize=10)
    _stacked(right, confidence["entropy_histogram"], "entropy at T = 1 (nats)")
    log_c = np.log(len(report["classes"]))
    right.axvline(log_c, color=ACCENT, linestyle=":", linewidth=1)
    right.text(
        log_c, 0.5, "uniform ", transform=right.get_xaxis_transform(), ha="right", va="center", fontsize=8, rotation=90
    )
    right.set_title(f"entropy of the teacher's distribution (mean {confidence['entropy_mean']:.3f} nats)", fontsize=10)
    _title(figure, report, "Confidence")
    return figure


def _reliability(axis, calibration: dict, label: str) -> None:
    bins = calibration["bins"]
    centers = np.array([(b["low"] + b["high"]) / 2 for b in bins])
    width = bins[0]["high"] - bins[0]["low"]
    accuracy = np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins])
    confidence = np.array([np.nan if b["confidence"] is None else b["confidence"] for b in bins])
    counts = np.array([b["count"] for b in bins])
    axis.bar(centers, accuracy, width * 0.9, color=RIGHT, label="accuracy in bin")
    axis.vlines(centers, np.fmin(accuracy, confidence), np.fmax(accuracy, confidence), color=WRONG, linewidth=1.5)
    axis.plot(
        centers,
        confidence,
        "_",
        color=WRONG,
        markersize=12,
        markeredgewidth=2,
        label="mean confidence (bar below: over-confident)",
    )
    axis.plot([0, 1], [0, 1], color=ACCENT, linestyle="--", linewidth=1, label="perfect calibration")
    for x, n, acc in zip(centers, counts, accuracy):
        if n:
            axis.text(
                x,
                0.02,
                str(n),
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
                color="white" if acc > 0.15 else "black",
            )
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(f"{label}: ECE {calibration['ece']:.2%}, NLL {calibration['nll']:.3f}", fontsize=10)


def calibration_figure(report: dict):
    calibration = report["calibration"]
    figure, axes = _subplots(1, 3, figsize=(15, 4.5))
    _reliability(axes[0], calibration["at_1"], "T = 1")
    _reliability(axes[1], calibration["fitted"], f"fitted T = {calibration['fitted']['temperature']:.2f}")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.36, 0.0),
        ncol=3,
        fontsize=8,
        frameon=False,
        title="numbers in bars: predictions per bin",
        title_fontsize=8,
    )
    curve = calibration["nll_curve"]
    axes[2].plot(curve["temperatures"], curve["nll"], color=RIGHT)
    axes[2].set_xscale("log")
    axes[2].axvline(
        calibration["fitted"]["temperature"],
        color=WRONG,
        linestyle="--",
        linewidth=1,
        label=f"best T = {calibration['fitted']['temperature']:.2f}",
    )
    for t in report["temperatures"]:
        nll = np.interp(np.log(t["temperature"]), np.log(curve["temperatures"]), curve["nll"])
        axes[2].plot(t["temperature"], nll, "o", color=ACCENT, markersize=4)
        axes[2].annotate(
            f"T={t['temperature']:g}", (t["temperature"], nll), xytext=(4, 4), textcoords="offset points", fontsize=8
        )
    low = min(curve["nll"])
    axes[2].set_ylim(low - 0.05 * abs(low) - 0.01, min(max(curve["nll"]), 4 * low + 1))
    axes[2].set_xlabel("temperature T (log scale)")
    axes[2].set_ylabel("NLL of the labels under softmax(z / T)")
    axes[2].set_title("which temperature makes the probabilities honest", fontsize=10)
    axes[2].legend(fontsize=8)
    _title(figure, report, "Calibration")
    return figure


def temperature_figure(report: dict):
    figure, (left, right) = _subplots(1, 2, figsize=(11, 4))
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(report["temperatures"])))
    for t, color in zip(report["temperatures"], colors):
        histogram = t["entropy_histogram"]
        edges = np.array(histogram["edges"])
        counts = np.array(histogram["counts"]) / max(sum(histogram["counts"]), 1)
        left.stairs(
            counts, edges, color=color, linewidth=1.5, label=f"T = {t['temperature']:g} (mean {t['entropy_mean']:.2f})"
        )
        curve = t["topk_mass_curve"]
        right.plot(
            np.arange(1, len(curve) + 1),
            curve,
            marker="o",
            markersize=3,
            color=color,
            label=f"T = {t['temperature']:g}",
        )
    log_c = np.log(len(report["classes"]))
    left.axvline(log_c, color=ACCENT, linestyle=":", linewidth=1)
    left.text(
        log_c, 0.5, "uniform ", transform=left.get_xaxis_transform(), ha="right", va="center", fontsize=8, rotation=90
    )
    left.set_xlabel("entropy of the soft targets (nats)")
    left.set_ylabel("share of predictions")
    left.set_title("how soft the targets are at each temperature", fontsize=10)
    left.legend(fontsize=8)
    if report["topk"]:
        right.axvline(report["topk"], color=WRONG, linestyle=":", linewidth=1)
        right.text(report["topk"], 0.02, f" stored top-{report['topk']}; beyond: estimated", fontsize=8, color=WRONG)
    right.set_xlabel("k (classes, most probable first)")
    right.set_ylabel("mean probability mass in the top k")
    right.set_ylim(0, 1.02)
    right.set_title("top-k probability mass coverage", fontsize=10)
    right.legend(fontsize=8, loc="lower right")
    _title(figure, report, "Soft targets by temperature")
    return figure


def views_figure(report: dict):
    views = report["views"]
    figure, axes = _subplots(1, 3, figsize=(15, 4))
    counts = views["other_views_agreeing"]
    others = views["num_views"] - 1
    axes[0].bar(range(len(counts)), counts, 0.7, color=RIGHT)
    axes[0].set_xticks(range(len(counts)), [f"{k} of {others}" for k in range(len(counts))])
    _count_scale(axes[0], counts)
    axes[0].set_xlabel("other views whose arg-max equals view 0's")
    axes[0].set_ylabel("samples")
    axes[0].set_title(
        f"agreement with view 0: {views['agree_with_view0']:.1%} (all agree on {views['all_views_agree']:.1%})",
        fontsize=10,
    )
    index = np.arange(views["num_views"])
    axes[1].bar(index - 0.2, views["accuracy_per_view"], 0.4, color=RIGHT, label="accuracy")
    axes[1].bar(index[1:] + 0.2, views["agree_with_view0_per_view"][1:], 0.4, color=ACCENT, label="agrees with view 0")
    axes[1].set_xticks(index, [f"{v}\nseed {s}" for v, s in zip(index, views["seeds"])], fontsize=8)
    low = min(views["accuracy_per_view"] + views["agree_with_view0_per_view"])
    bottom = max(0, low - 0.05)
    axes[1].set_ylim(bottom, 1 + 0.3 * (1 - bottom))  # headroom for the legend
    axes[1].set_yticks([t for t in axes[1].get_yticks() if t <= 1])
    axes[1].set_xlabel("view")
    axes[1].set_title(f"per view (majority vote: {views['majority_vote_accuracy']:.1%})", fontsize=10)
    axes[1].legend(fontsize=8, loc="upper center", ncol=2)
    histogram = views["kl_histogram"]
    edges = np.array(histogram["edges"])
    axes[2].bar(edges[:-1], histogram["counts"], np.diff(edges), align="edge", color=WRONG, edgecolor="white")
    _count_scale(axes[2], histogram["counts"])
    axes[2].set_xlabel("mean pairwise KL of a sample's views (nats, T = 1; last bin: top 1%)")
    axes[2].set_ylabel("samples")
    axes[2].set_title(f"how much the views' targets differ (mean {views['mean_pairwise_kl']:.3f})", fontsize=10)
    _title(figure, report, "Views")
    return figure


def predictions_figure(report: dict):
    """An unlabelled cache: which classes the teacher predicts, and how confidently."""
    predictions = report["predictions"]
    figure, (left, right) = _subplots(1, 2, figsize=(11, 3.8))
    names, counts = list(predictions["predicted_classes"]), list(predictions["predicted_classes"].values())
    positions = np.arange(len(names))
    left.bar(positions, counts, color=RIGHT)
    if len(names) <= NAMED_CLASSES:
        left.set_xticks(positions, names, rotation=90 if len(names) > 10 else 0)
    left.set_title("predicted class (arg-max), every view", fontsize=10)
    left.set_ylabel("predictions")
    histogram = predictions["confidence"]["histogram"]
    edges = np.array(histogram["edges"])
    right.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge", color=ACCENT)
    right.set_title(f"confidence (max probability at T=1), mean {predictions['confidence']['mean']:.3f}", fontsize=10)
    right.set_xlabel("confidence")
    _title(figure, report, "Teacher predictions (no labels)")
    return figure


def embedding_figure(report: dict):
    """Stored embeddings: a 2-D PCA scatter (coloured by class when the cache has labels) and their norms."""
    embedding = report["embedding"]
    pca = embedding["pca"]
    points = np.array(pca["points"]).reshape(-1, 2)
    figure, (left, right) = _subplots(1, 2, figsize=(11, 4.5))
    if pca["labels"] is None:
        left.scatter(points[:, 0], points[:, 1], s=6, color=ACCENT, alpha=0.6)
    else:
        labels = np.array(pca["labels"])
        colours = matplotlib.colormaps["tab20" if len(report["classes"]) > 10 else "tab10"]
        for c in np.unique(labels):
            at = labels == c
            name = report["classes"][c] if c < len(report["classes"]) else str(c)
            left.scatter(points[at, 0], points[at, 1], s=6, color=colours(int(c) % colours.N), label=name, alpha=0.7)
        if len(np.unique(labels)) <= 20:
            left.legend(fontsize=7, markerscale=2, loc="best")
    left.set_title(f"PCA of view 0 ({pca['explained_2']:.0%} of the variance in 2 components)", fontsize=10)
    histogram = embedding["norm"]["histogram"]
    edges = np.array(histogram["edges"])
    right.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge", color=RIGHT)
    right.set_title(f"L2 norm, mean {embedding['norm']['mean']:.3g} (dimension {embedding['dimension']})", fontsize=10)
    _title(figure, report, "Teacher embeddings")
    return figure
