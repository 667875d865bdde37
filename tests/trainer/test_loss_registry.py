"""The loss registry: every entry declares what it needs, and a new loss is one class plus one line
in `LOSSES` — the config checks, the run, the sweep and the scikit-learn path then know it."""

import numpy as np
import pytest
import torch

from trainer import FitConfig, SweepConfig, fit
from trainer.classic import sample_weights
from trainer.losses import LOSSES, Loss, Objective, default_loss


class SquaredProbabilities(Loss):
    """A throw-away loss, as its own module would hold it: the Brier distance to the teacher's probabilities."""

    name = "brier"
    description = "squared distance between the student's and the teacher's probabilities"
    needs_teacher = True

    def __call__(self, student_logits, teacher_logits, labels):
        difference = student_logits.float().softmax(-1) - teacher_logits.float().softmax(-1)
        return difference.square().sum(-1).mean()

    def class_weights(self, labels, teacher_logits, num_classes):
        p = np.exp(teacher_logits - teacher_logits.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True)


@pytest.fixture
def brier(monkeypatch):
    monkeypatch.setitem(LOSSES, SquaredProbabilities.name, SquaredProbabilities)  # its registration line
    return SquaredProbabilities.name


def test_a_new_loss_trains_through_fit(brier, cache, fit_options, image_folder):
    summary = fit(FitConfig.from_options(cache=cache, loss=brier, **{**fit_options, "epochs": 1}))
    assert summary["loss"] == brier and summary["config"]["objective"]["loss"] == brier and summary["finished"]
    assert np.isfinite(summary["train_loss"])
    with pytest.raises(ValueError, match=f"--loss {brier} needs teacher outputs"):
        fit(FitConfig.from_options(dataset=f"imagefolder:{image_folder}", loss=brier, **fit_options))


def test_a_new_loss_without_settings_gets_one_sweep_run_per_student(brier, cache, fit_options):
    base = FitConfig.from_options(cache=cache, loss=brier, **fit_options)
    config = SweepConfig(base, students=("linear", "mlp"), temperatures=(1.0, 2.0), with_ce=True)
    names = [c.runtime.out.rsplit("/", 1)[1] for c in config.runs()]
    assert names == ["linear-ce", f"linear-{brier}", "mlp-ce", f"mlp-{brier}"]


def test_a_new_loss_gives_scikit_learn_its_sample_weights(brier):
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    rows, classes, weights = sample_weights(np.array([0, 2]), logits, Objective(brier), 3)
    per_row = np.zeros((2, 3))
    per_row[rows, classes] = weights
    np.testing.assert_allclose(per_row, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("name", [name for name, loss in LOSSES.items() if "embedding" not in loss.needs])
def test_every_registered_loss_declares_itself(name):
    loss = LOSSES[name]
    assert loss.name == name and loss.description and "\n" not in loss.description
    assert set(loss.settings) <= {"temperature", "alpha"}
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    value = Objective(name, temperature=2.0, alpha=0.5)(student, teacher, labels)
    assert value.ndim == 0 and torch.isfinite(value)
    weights = Objective(name, temperature=2.0, alpha=0.5).loss.class_weights(labels.numpy(), teacher.numpy(), 4)
    np.testing.assert_allclose(weights.sum(-1), 1.0)  # each sample's class weights are a distribution


def test_the_default_loss_depends_on_whether_there_is_a_teacher(cache, image_folder):
    assert LOSSES[default_loss(has_teacher=True)].needs_teacher
    assert not LOSSES[default_loss(has_teacher=False)].needs_teacher
    assert FitConfig.from_options(cache=cache, student="linear", out="x").loss_name == default_loss(has_teacher=True)
    labels_only = FitConfig.from_options(dataset=f"imagefolder:{image_folder}", student="linear", out="x")
    assert labels_only.loss_name == default_loss(has_teacher=False)
