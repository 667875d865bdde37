"""`softlabels inspect`: the statistics are right, and the report and plots land on disk for every kind of cache."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.cli import main
from softlabels.report.inspect import InspectConfig, compute_report
from softlabels.report.statistics import T_RANGE, entropy, fit_temperature, reliability, views_section

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["full", "merged_views"])
def test_inspect_writes_report_and_plots(cache_of, tmp_path, kind):
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["inspect", str(cache_of(kind)), "--out", str(out), "-t", "1", "-t", "3"])
    assert result.exit_code == 0, result.output
    assert "best temperature" in result.output
    report = json.loads((out / "report.json").read_text())
    expected = ["accuracy.png", "confusion.png", "confidence.png", "calibration.png", "temperature.png"]
    expected += ["views.png"] if kind == "merged_views" else []
    assert report["plots"] == expected
    for name in expected:
        assert (out / name).read_bytes()[:8] == PNG and (out / name).stat().st_size > 10_000
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Teacher report: ") and "best temperature (NLL)" in markdown
    assert all(f"]({name})" in markdown for name in expected)
    assert [t["temperature"] for t in report["temperatures"]] == [1.0, 3.0]


@pytest.mark.parametrize("kind", ["full", "topk", "multiview", "merged_views", "merged_rows"])
def test_report_numbers_agree_with_the_cache(cache_of, dense, kind):
    cache = cache_of(kind)
    report, confusion = compute_report(cache)
    logits = dense(cache)
    labels = store.read_keys_labels(cache)[1]
    n, v, c = logits.shape
    assert report["samples_used"] == n == 18 and report["num_views"] == v
    assert report["accuracy"]["accuracy"] == pytest.approx(report["accuracy"]["stored_teacher_accuracy"])
    assert (
        confusion.sum() == n * v and confusion.sum(axis=1).tolist() == (np.bincount(labels, minlength=c) * v).tolist()
    )
    assert set(report["accuracy"]["per_class"]) == {"cat", "dog", "frog"}
    assert report["coverage"]["mass"]["1"] <= report["coverage"]["mass"]["3"] == pytest.approx(1.0, abs=1e-5)
    assert "10" not in report["coverage"]["mass"]  # only 3 classes
    assert report["coverage"]["exact_up_to_k"] == (2 if kind == "topk" else 3)
    entropies = [t["entropy_mean"] for t in report["temperatures"]]
    assert entropies == sorted(entropies) and entropies[-1] <= np.log(3) + 1e-6  # softer as T grows
    assert report["calibration"]["fitted"]["nll"] <= report["calibration"]["at_1"]["nll"] + 1e-6
    assert (report["views"] is None) == (v == 1)


def test_view_agreement_of_merged_views(cache_of, dense):
    cache = cache_of("merged_views")
    views = compute_report(cache)[0]["views"]
    pred = dense(cache).argmax(-1)
    assert views["num_views"] == 4 and views["seeds"] == [0, 0, 1, 1]
    assert views["agree_with_view0"] == pytest.approx((pred[:, 1:] == pred[:, :1]).mean())
    assert sum(views["other_views_agreeing"]) == 18 and views["mean_pairwise_kl"] >= 0


def test_fitted_temperature_recovers_the_true_one():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 5)).astype(np.float32)
    true_t = 2.5
    p = np.exp(logits / true_t)
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)  # labels drawn from softmax(z / 2.5)
    fitted, curve = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    grid = np.log(curve["temperatures"])
    assert abs(np.log(fitted) - grid[int(np.argmin(curve["nll"]))]) <= grid[1] - grid[0]  # refined near the grid's best


def test_reliability_and_ece():
    confidence = np.array([1.0, 1.0, 0.25, 0.25])
    correct = np.array([True, False, False, False])
    result = reliability(confidence, correct, bins=4)
    # bin 3: confidence 1.0, accuracy 0.5 -> gap 0.5 on half the data; bin 1: 0.25 vs 0 on the other half
    assert result["ece"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)
    assert [b["count"] for b in result["bins"]] == [0, 2, 0, 2] and result["bins"][0]["accuracy"] is None


def test_identical_views_agree_completely():
    logits = np.repeat(np.random.default_rng(1).normal(size=(6, 1, 4)), 3, axis=1).astype(np.float32)
    views = views_section(logits, np.zeros(6, dtype=np.int64), [0, 1, 2])
    assert views["agree_with_view0"] == 1.0 and views["mean_pairwise_kl"] == pytest.approx(0, abs=1e-6)
    assert views["other_views_agreeing"] == [0, 0, 6]


def test_entropy_bounds():
    assert entropy(np.zeros((1, 8), np.float32))[0] == pytest.approx(np.log(8))
    assert entropy(np.array([[50.0, 0, 0]], np.float32))[0] == pytest.approx(0, abs=1e-6)


def test_bad_requests(cache_of, write_partial, tmp_path):
    cache = cache_of("full")
    with pytest.raises(ValueError, match="temperatures must be positive"):
        compute_report(cache, InspectConfig(temperatures=(0.0,)))
    partial = write_partial(cache, tmp_path / "stopped.h5")
    with pytest.raises(store.CacheError, match="incomplete"):
        compute_report(partial)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "missing.h5")])
    assert result.exit_code == 1 and "cache not found" in result.output


def test_max_samples_takes_evenly_spaced_rows(cache_of):
    report, confusion = compute_report(cache_of("full"), InspectConfig(max_samples=6))
    assert report["samples_used"] == 6 and confusion.sum() == 6
    assert all(count == 2 for count in report["accuracy"]["support"].values())  # every class kept


def test_fit_reports_when_no_temperature_is_best():
    logits = np.random.default_rng(2).normal(0, 3, (2000, 4)).astype(np.float32)
    always_right = logits.argmax(1)  # the NLL keeps falling as T -> 0
    unrelated = np.random.default_rng(3).integers(0, 4, 2000)  # ... or as T -> infinity
    assert fit_temperature(logits, always_right)[0] == pytest.approx(T_RANGE[0], rel=0.01)
    assert fit_temperature(logits, unrelated)[0] == pytest.approx(T_RANGE[1], rel=0.01)
