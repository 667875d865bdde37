"""The probes (k-NN, linear) and the neighbour overlap against hand checks on tiny data, and
`penultimate_features`."""

import numpy as np
import pytest
import torch
from torch import nn

from softlabels.models.features import penultimate_features
from softlabels.models.registry import create_model
from softlabels.probes import (
    RIDGES,
    knn_predict,
    linear_predict,
    neighbour_overlap,
    probe_accuracy,
    split_halves,
)

# Even rows fit, odd rows are scored. Fit: (1, 0) class 0, (0, 1) class 1, (1, 1) class 1.
# Scored: (2, .1) class 0, (.1, 3) class 1, (1, .2) class 1, whose cosine similarities to the fitting
# rows are .981, .196, .832: k=1 follows (1, 0) and is wrong; k=3 weighs class 1 at .196 + .832 = 1.028
# against .981 and is right.
POINTS = np.array([[1, 0], [2, 0.1], [0, 1], [0.1, 3], [1, 1], [1, 0.2]])
LABELS = np.array([0, 0, 1, 1, 1, 1])


def test_halves_alternate():
    fit, score = split_halves(5)
    assert fit.tolist() == [0, 2, 4] and score.tolist() == [1, 3]


def _at(degrees) -> np.ndarray:
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1)


def test_neighbour_overlap_by_hand():
    a = _at([0, 10, 90, 100])  # nearest others: 1, 0, 3, 2
    assert neighbour_overlap(a, 5 * a @ np.array([[0, 1], [-1, 0]]), k=1) == 1.0  # rotated and scaled: the same
    assert neighbour_overlap(a, _at([0, 90, 10, 100]), k=1) == 0.0  # nearest: 2, 3, 0, 1
    assert neighbour_overlap(a, _at([0, 10, 100, 200]), k=1) == 0.75  # nearest: 1, 0, 1, 2
    assert neighbour_overlap(a, _at([0, 90, 10, 100]), k=3) == 1.0  # every other sample: the same sets
    assert neighbour_overlap(a, np.hstack([a, np.zeros((4, 3))]), k=1) == 1.0  # other widths compare


def test_neighbour_overlap_needs_the_same_samples():
    with pytest.raises(ValueError, match="same samples: got 4 and 3 rows"):
        neighbour_overlap(_at([0, 10, 90, 100]), _at([0, 10, 90]))


def test_knn_by_hand():
    assert probe_accuracy(POINTS, LABELS, ("knn",), 2, k=1) == {"probe_knn": pytest.approx(2 / 3)}
    assert probe_accuracy(POINTS, LABELS, ("knn",), 2, k=3) == {"probe_knn": 1.0}
    assert knn_predict(POINTS[0::2], LABELS[0::2], POINTS[1::2], 2, k=1).tolist() == [0, 1, 0]


def test_knn_is_scale_free():
    scaled = POINTS * np.array([[3.0], [0.5], [7.0], [2.0], [0.1], [10.0]])
    assert probe_accuracy(scaled, LABELS, ("knn",), 2, k=1) == probe_accuracy(POINTS, LABELS, ("knn",), 2, k=1)


def _ridge(design: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge with an unshrunk bias (last column), solved as least squares on rows augmented with the penalty."""
    d = design.shape[1] - 1
    penalty = np.sqrt(ridge * len(design)) * np.eye(d + 1)[:d]  # no row for the bias
    return np.linalg.lstsq(np.r_[design, penalty], np.r_[targets, np.zeros((d, targets.shape[1]))], rcond=None)[0]


@pytest.mark.parametrize("width", [5, 60])  # fewer and more features than rows
def test_linear_probe_is_ridge_with_the_penalty_of_least_leave_one_out_error(width):
    rng = np.random.default_rng(0)
    x, y, test = rng.normal(size=(40, width)), rng.integers(0, 3, 40), rng.normal(size=(7, width))
    x[:, 0] += y  # some signal
    mean, std = x.mean(0), x.std(0) + 1e-6
    design, targets = np.c_[(x - mean) / std, np.ones(40)], np.eye(3)[y]

    def loo_error(ridge):  # refit without each row in turn
        rows = np.arange(40)
        return sum(
            ((design[i] @ _ridge(design[rows != i], targets[rows != i], ridge * 40 / 39) - targets[i]) ** 2).sum()
            for i in rows
        )

    errors = [loo_error(r) for r in RIDGES]
    weights = _ridge(design, targets, RIDGES[int(np.argmin(errors))])
    expected = (np.c_[(test - mean) / std, np.ones(7)] @ weights).argmax(1)
    assert linear_predict(x, y, test, 3).tolist() == expected.tolist()


def test_linear_probe_separates_separable_classes():
    x = np.array([[-2.0], [-3.0], [2.0], [3.0], [-1.0], [-0.5], [1.0], [0.5]])
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    assert probe_accuracy(x, y, ("linear",), 2) == {"probe_linear": 1.0}


def test_unknown_probe_is_refused():
    with pytest.raises(ValueError, match="unknown probe 'svm'; choose from: knn, linear"):
        probe_accuracy(POINTS, LABELS, ("svm",), 2)


@pytest.mark.parametrize("spec", ["small_cnn", "cifar_resnet20", "mlp"])
def test_features_are_what_enters_the_classifier(spec):
    torch.manual_seed(0)
    model = create_model(spec, num_classes=4, in_channels=3, image_size=8).eval()
    x = torch.randn(3, 3, 8, 8)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    logits, features = penultimate_features(model, x)
    assert features.shape == (3, head.in_features)
    torch.testing.assert_close(head(features), logits)
    torch.testing.assert_close(logits, model(x))


def test_an_encoder_without_a_linear_layer_gives_its_pooled_output():
    encoder = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
    x = torch.randn(2, 3, 6, 6)
    logits, features = penultimate_features(encoder, x)
    assert logits is None
    torch.testing.assert_close(features, encoder(x).mean(dim=(2, 3)))


def test_token_features_are_averaged_over_tokens():
    model = nn.Sequential(nn.Identity(), nn.Linear(4, 2))
    x = torch.randn(2, 5, 4)  # (batch, tokens, width)
    _, features = penultimate_features(model, x)
    torch.testing.assert_close(features, x.mean(dim=1))


def test_inspect_probes_score_the_stored_logits(build_options, tmp_path):
    from softlabels import store
    from softlabels.build import BuildConfig, build_cache
    from softlabels.report.inspect import InspectConfig, compute_report, load_sample

    path = build_cache(BuildConfig.from_options(**build_options)).path
    report, _ = compute_report(path, InspectConfig(probes=("knn", "linear")))
    sample = load_sample(path, store.read_complete_info(path), 50_000)
    expected = probe_accuracy(sample.logits[:, 0], sample.labels, ("knn", "linear"), 3)
    assert report["probes"] == {"features": "stored logits, view 0", "samples": 18, **expected}
    assert compute_report(path)[0]["probes"] is None
