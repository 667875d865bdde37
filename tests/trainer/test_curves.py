"""Pictures are written (and are PNG files), and a run redraws its curves only now and then."""

import time

from trainer import FitConfig, curves
from trainer.curves import plot_curves, plot_leaderboard
from trainer.outputs import Curves
from trainer.resume import Progress

PNG = b"\x89PNG"


def test_curves_with_and_without_evaluation(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "eval_loss": 1.1, "eval_accuracy": 0.4},
        {"epoch": 2, "train_loss": 0.8, "train_accuracy": 0.6},
    ]
    assert plot_curves(history, tmp_path / "curves.png", title="t").read_bytes().startswith(PNG)


def test_leaderboard_with_a_failed_run(tmp_path):
    rows = [
        {"run": "a", "student": "mlp", "test_accuracy": 0.81},
        {"run": "b", "student": "linear", "test_accuracy": None, "status": "failed"},
    ]
    assert plot_leaderboard(rows, tmp_path / "leaderboard.png").read_bytes().startswith(PNG)


class _Run:
    config = FitConfig.from_options(cache="unused.h5", student="linear", out="unused")


def test_a_run_draws_its_curves_at_most_once_a_minute_and_always_at_its_end(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(curves, "plot_curves", lambda history, path, title: drawn.append(len(history)))
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    hook, progress = Curves(), Progress()
    hook.on_fit_start(_Run, progress)
    for epoch, seconds in enumerate([20, 30, 15, 10, 5], start=1):  # epochs end at 20, 50, 65, 75, 80 s
        clock[0] += seconds
        progress.history.append({"epoch": epoch})
        hook.on_epoch_end(_Run, progress, progress.history[-1])
    hook.teardown(_Run)  # done, stopped or failed: the picture holds every epoch
    assert drawn == [3, 5]
