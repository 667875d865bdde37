"""scikit-learn students trained on a cache's soft targets, in one command."""

import json
import shutil

import joblib
import numpy as np
import pytest
from click.testing import CliRunner

from softlabels.build import BuildConfig, build_cache
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


CLASSES = """
import numpy as np
import torch


class Features(torch.utils.data.Dataset):
    classes = ["ant", "bee", "cow"]

    def __init__(self, labels):
        self.x = np.random.default_rng(0).normal(size=(len(labels), 4)) + np.asarray(labels)[:, None]
        self.targets = labels
        self.keys = [f"s{i}" for i in range(len(labels))]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]).float(), self.targets[i]


def two(split="train", root=None):
    return Features([0, 1] * 6)


def one(split="train", root=None):
    return Features([1] * 12)
"""


def fit_features(tmp_path, function):
    (tmp_path / "classes.py").write_text(CLASSES)
    return CliRunner().invoke(
        main,
        [
            "fit",
            "--dataset",
            f"{tmp_path / 'classes.py'}:{function}",
            "--student",
            "sklearn:logistic",
            "--eval-dataset",
            "none",
            "--workers",
            "0",
            "--out",
            str(tmp_path / function),
        ],
    )


def test_a_class_without_training_samples_is_named(tmp_path):
    result = fit_features(tmp_path, "two")
    assert result.exit_code == 0, result.output
    assert "warning: class cow has no training samples" in result.output


def test_training_data_of_one_class_is_refused_with_its_name(tmp_path):
    result = fit_features(tmp_path, "one")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "the training targets hold only class bee (of ant, bee, cow)" in lines[0]
    assert "train on more data" in lines[0] and not (tmp_path / "one").exists()


def test_an_unlabelled_cache_teaches_every_class_without_a_missing_class_warning(build_options, image_folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, image in enumerate(sorted((image_folder / "train").rglob("*.png"))):
        shutil.copy(image, flat / f"{index:03d}.png")
    options = {**build_options, "dataset": f"imagefolder:{flat}", "out": str(tmp_path / "u.h5"), "num_classes": 3}
    cache = str(build_cache(BuildConfig.from_options(**options)).path)
    args = ["fit", "--cache", cache, "--student", "sklearn:logistic", "--alpha", "1", "--workers", "0"]
    args += ["--eval-dataset", f"imagefolder:{image_folder}", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "no training samples" not in result.output


def test_probes_of_a_classic_student_are_refused_not_ignored(cache, tmp_path):
    args = ["fit", "--cache", cache, "--student", "sklearn:logistic", "--probe", "knn", "--out", str(tmp_path / "p")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "a scikit-learn student has none: leave out --probe" in result.output
    assert not (tmp_path / "p").exists()


def test_a_sweep_refuses_a_loss_a_classic_student_cannot_take_before_any_run(cache, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--cache", cache, "--student", "linear", "--student", "sklearn:logistic", "--loss", "kd+hard"]
    result = CliRunner().invoke(main, [*args, "--epochs", "1", "--workers", "0", "--no-progress", "--out", str(out)])
    assert result.exit_code == 1 and "--loss kd+hard is a sum of losses" in result.output
    assert "Traceback" not in result.output and not (out / "linear-kd+hard-T4-a0.9").exists()
