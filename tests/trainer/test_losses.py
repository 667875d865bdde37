"""Loss values against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from trainer import Objective, hard_loss, kd_loss


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])


def test_kl_term_is_zero_when_student_equals_teacher(logits):
    student, _, labels = logits
    assert kd_loss(student, student.clone(), labels, temperature=3.0, alpha=1.0).item() == pytest.approx(0, abs=1e-6)


def test_alpha_zero_is_cross_entropy(logits):
    student, teacher, labels = logits
    assert torch.allclose(kd_loss(student, teacher, labels, alpha=0.0), F.cross_entropy(student, labels))


def test_two_class_example_by_hand():
    student, teacher, labels = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([1])
    # teacher p = (3/4, 1/4), student q = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2); CE = ln 2
    kl = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    value = kd_loss(student, teacher, labels, temperature=1.0, alpha=0.25).item()
    assert value == pytest.approx(0.25 * kl + 0.75 * math.log(2), rel=1e-6)


def test_temperature_squared_scaling(logits):
    student, teacher, labels = logits
    T = 4.0
    p = F.softmax(teacher / T, dim=1)
    kl = (p * (p.log() - F.log_softmax(student / T, dim=1))).sum(1).mean()
    assert kd_loss(student, teacher, labels, temperature=T, alpha=1.0).item() == pytest.approx(
        T * T * kl.item(), rel=1e-5
    )


def test_batch_mean_does_not_depend_on_batch_size(logits):
    student, teacher, labels = logits
    doubled = kd_loss(torch.cat([student, student]), torch.cat([teacher, teacher]), torch.cat([labels, labels]))
    assert doubled.item() == pytest.approx(kd_loss(student, teacher, labels).item(), rel=1e-6)


def test_hard_is_cross_entropy_on_the_teachers_argmax(logits):
    student, teacher, _ = logits
    assert torch.allclose(hard_loss(student, teacher), F.cross_entropy(student, teacher.argmax(1)))


def test_objective_dispatch_and_label_smoothing(logits):
    student, teacher, labels = logits
    assert torch.allclose(
        Objective("ce", label_smoothing=0.1)(student, None, labels),
        F.cross_entropy(student, labels, label_smoothing=0.1),
    )
    p, log_q = F.softmax(teacher / 2.0, dim=1), F.log_softmax(student / 2.0, dim=1)
    by_hand = 0.3 * 4.0 * (p * (p.log() - log_q)).sum(1).mean() + 0.7 * F.cross_entropy(student, labels)
    assert torch.allclose(Objective("kd", temperature=2.0, alpha=0.3)(student, teacher, labels), by_hand)
    assert Objective("hard").needs_teacher and not Objective("ce").needs_teacher


def test_the_documented_defaults_are_t4_alpha09(logits):
    """README: defaults T=4, alpha=0.9; the literal values, as users rely on them."""
    student, teacher, labels = logits
    assert (Objective("kd").temperature, Objective("kd").alpha) == (4.0, 0.9)
    p, log_q = F.softmax(teacher / 4.0, dim=1), F.log_softmax(student / 4.0, dim=1)
    by_hand = 0.9 * 16.0 * (p * (p.log() - log_q)).sum(1).mean() + 0.1 * F.cross_entropy(student, labels)
    assert torch.allclose(kd_loss(student, teacher, labels), by_hand)
    assert torch.allclose(Objective("kd")(student, teacher, labels), by_hand)


def test_half_precision_logits_are_computed_in_float32(logits):
    student, teacher, labels = logits
    value = kd_loss(student.half(), teacher.half(), labels)
    assert value.dtype == torch.float32


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(temperature=0.0), "temperature must be positive"),
        (dict(temperature=-1.0), "temperature must be positive"),
        (dict(alpha=1.5), r"alpha must lie in \[0, 1\]"),
        (dict(alpha=-0.1), r"alpha must lie in \[0, 1\]"),
    ],
)
def test_bad_settings_are_refused(logits, settings, message):
    student, teacher, labels = logits
    with pytest.raises(ValueError, match=message):
        kd_loss(student, teacher, labels, **settings)
    with pytest.raises(ValueError, match=message):
        Objective("kd", **settings)
    with pytest.raises(ValueError, match="unknown loss"):
        Objective("mse")
