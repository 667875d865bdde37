"""Pictures are written (and are PNG files)."""

from trainer.curves import plot_curves, plot_leaderboard

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
