"""scikit-learn students trained on a cache's soft targets, in one command."""

import json

import joblib
import numpy as np
import pytest
from click.testing import CliRunner

from trainer.classic import sample_weights
from trainer.cli import main
from trainer.losses import Objective

pytest.importorskip("sklearn")


@pytest.mark.parametrize("student", ["sklearn:logistic", "sklearn:linear_svm"])
def test_a_classic_student_learns_from_the_cache(student, multiview_cache, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "fit",
            "--cache",
            multiview_cache,
            "--student",
            student,
            "--workers",
            "0",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["student"] == student and summary["loss"] == "kd"
    # learns: the tiny classes differ by colour; chance is 1/3 and the majority class 3/8 of the 8 test images
    assert summary["test_accuracy"] >= 0.75
    assert summary["num_features"] == 3 * 8 * 8 and summary["num_rows_fitted"] > 18 * 3  # 3 views, several classes
    model = joblib.load(tmp_path / "run" / "model.joblib")
    assert model.predict(np.zeros((2, 192), dtype=np.float32)).shape == (2,)


def test_soft_targets_become_sample_weights():
    labels = np.array([0, 2])
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]], dtype=np.float32)
    rows, classes, weights = sample_weights(labels, logits, Objective("kd", temperature=2.0, alpha=0.5), 3)
    per_row = np.zeros((2, 3))
    per_row[rows, classes] = weights
    p = np.exp(logits / 2) / np.exp(logits / 2).sum(-1, keepdims=True)
    np.testing.assert_allclose(per_row, 0.5 * p + 0.5 * np.eye(3)[labels], rtol=1e-6)
    np.testing.assert_allclose(per_row.sum(-1), 1.0)
    rows, classes, weights = sample_weights(labels, logits, Objective("hard"), 3)
    assert classes.tolist() == [0, 2] and weights.tolist() == [1, 1]


def test_unknown_classic_students_and_online_teachers_are_refused(
    multiview_cache, image_folder, teacher_weights, tmp_path
):
    result = CliRunner().invoke(
        main, ["fit", "--cache", multiview_cache, "--student", "sklearn:forest", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1 and "unknown scikit-learn student 'sklearn:forest'" in result.output
    result = CliRunner().invoke(
        main,
        [
            "fit",
            "--dataset",
            f"imagefolder:{image_folder}",
            "--teacher",
            "small_cnn",
            "--weights",
            str(teacher_weights),
            "--student",
            "sklearn:logistic",
            "--out",
            str(tmp_path / "y"),
        ],
    )
    assert result.exit_code == 1 and "not from an online --teacher" in result.output
