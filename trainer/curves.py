"""Pictures of runs: a run's learning curves (curves.png) and a sweep's leaderboard (leaderboard.png).

matplotlib's object API (`matplotlib.figure.Figure`: files only, no pyplot, no backend chosen at import,
so the user's own matplotlib setup is left alone); each figure is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from trainer.checkpoints import write_bytes_atomic


def _save(figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return write_bytes_atomic(buffer.getvalue(), path)


def _subplots(*grid, figsize):
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid)


def plot_curves(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy (train and held-out) against epoch."""
    epochs = [r["epoch"] for r in history]
    figure, (loss_axis, accuracy_axis) = _subplots(1, 2, figsize=(10, 3.8))
    for axis, metric, label in ((loss_axis, "loss", "loss"), (accuracy_axis, "accuracy", "top-1 accuracy")):
        axis.plot(epochs, [r[f"train_{metric}"] for r in history], "o-", label="train")
        held_out = [(r["epoch"], r[f"eval_{metric}"]) for r in history if r.get(f"eval_{metric}") is not None]
        if held_out:
            axis.plot(*zip(*held_out), "s-", label="test")
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    loss_axis.set_title("training loss is the objective (KD or CE); test loss is CE", fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def plot_leaderboard(
    rows: list[dict], path: str | Path, title: str = "", key: str = "test_accuracy", label: str = "test accuracy"
) -> Path:
    """Horizontal bars of each run's `key` (an accuracy: `label`), best at the top; failed runs are listed as such."""
    ranked = sorted(rows, key=lambda r: -1 if r.get(key) is None else r[key])
    labels = [r["run"] + ("" if r.get(key) is not None else f" ({r.get('status', 'failed')})") for r in ranked]
    values = [100 * (r.get(key) or 0.0) for r in ranked]
    students = sorted({r["student"] for r in ranked})
    colours = {s: matplotlib.colormaps["tab10"](i % 10) for i, s in enumerate(students)}
    figure, axis = _subplots(figsize=(8, 0.9 + 0.35 * max(1, len(ranked))))
    bars = axis.barh(range(len(ranked)), values, color=[colours[r["student"]] for r in ranked])
    axis.bar_label(
        bars,
        [f"{v:.2f}" if r.get(key) is not None else "" for v, r in zip(values, ranked)],
        padding=3,
        fontsize=8,
    )
    axis.set_yticks(range(len(ranked)), labels, fontsize=8)
    finite = [v for v, r in zip(values, ranked) if r.get(key) is not None]
    if finite:
        axis.set_xlim(max(0.0, min(finite) - 5), min(100.0, max(finite) + 5))
    axis.set_xlabel(f"{label} (%)")
    axis.grid(axis="x", alpha=0.3)
    axis.set_title(title or "sweep leaderboard")
    return _save(figure, path)
