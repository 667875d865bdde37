"""Training from unlabelled data: the teacher's targets alone, accuracy from a labelled --eval-dataset,
and every label term refused in one line."""

import json
import shutil
import warnings

import pytest
from click.testing import CliRunner

from softlabels.build import BuildConfig, build_cache
from trainer import FitConfig, SweepConfig, fit, sweep
from trainer.cli import main
from trainer.config import NoAccuracyWarning


@pytest.fixture
def flat_folder(image_folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, image in enumerate(sorted((image_folder / "train").rglob("*.png"))):
        shutil.copy(image, flat / f"{index:03d}.png")
    return flat


@pytest.fixture
def unlabelled_cache(build_options, flat_folder, tmp_path):
    options = {
        **build_options,
        "dataset": f"imagefolder:{flat_folder}",
        "out": str(tmp_path / "u.h5"),
        "num_classes": 3,
    }
    return str(build_cache(BuildConfig.from_options(**options)).path)


def test_a_student_learns_from_an_unlabelled_cache(unlabelled_cache, image_folder, fit_options, tmp_path):
    config = FitConfig.from_options(
        cache=unlabelled_cache, alpha=1.0, eval_dataset=f"imagefolder:{image_folder}", **fit_options
    )
    summary = fit(config)
    assert summary["finished"] and 0 <= summary["test_accuracy"] <= 1
    assert summary["train_accuracy"] is None  # no labels to score the training images against
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_accuracy"] is None and "eval_accuracy" in r for r in records)


def test_hard_targets_need_no_labels(unlabelled_cache, image_folder, fit_options):
    config = FitConfig.from_options(
        cache=unlabelled_cache, loss="hard", eval_dataset=f"imagefolder:{image_folder}", **fit_options
    )
    assert fit(config)["finished"]


def test_without_a_labelled_eval_set_the_run_says_it_measures_no_accuracy(unlabelled_cache, fit_options):
    with pytest.warns(NoAccuracyWarning, match="reports no accuracy"):
        summary = fit(FitConfig.from_options(cache=unlabelled_cache, alpha=1.0, **fit_options))
    assert summary["test_accuracy"] is None


def test_eval_none_is_not_warned_about(unlabelled_cache, fit_options):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoAccuracyWarning)
        fit(FitConfig.from_options(cache=unlabelled_cache, alpha=1.0, eval_dataset="none", **fit_options))


@pytest.mark.parametrize(
    ("extra", "term"),
    [
        (["--alpha", "0.9"], "KD with a label term (--alpha 0.9)"),
        ([], "KD with a label term (--alpha 0.9)"),  # the default alpha keeps a label term
        (["--loss", "ce"], "labels only (--loss ce)"),
    ],
)
def test_a_label_term_on_an_unlabelled_cache_is_refused_in_one_line(unlabelled_cache, tmp_path, extra, term):
    args = ["fit", "--cache", unlabelled_cache, "--student", "small_cnn", "--out", str(tmp_path / "r"), *extra]
    result = CliRunner().invoke(main, [*args, "--epochs", "1", "--workers", "0", "--device", "cpu"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is unlabelled" in lines[0] and term in lines[0]
    assert "--alpha 1" in lines[0]
    assert not (tmp_path / "r").exists()


def test_an_unlabelled_dataset_without_a_cache_is_refused(flat_folder, fit_options):
    with pytest.raises(ValueError, match="is unlabelled, so labels only .* build a cache of it"):
        fit(FitConfig.from_options(dataset=f"imagefolder:{flat_folder}", **fit_options))


def test_an_unlabelled_eval_set_is_refused(unlabelled_cache, flat_folder, fit_options):
    config = FitConfig.from_options(
        cache=unlabelled_cache, alpha=1.0, eval_dataset=f"imagefolder:{flat_folder}", **fit_options
    )
    with pytest.raises(ValueError, match="evaluation set .* is unlabelled: accuracy needs labels"):
        fit(config)


def test_an_eval_set_of_other_classes_is_refused(unlabelled_cache, make_images, fit_options, tmp_path):
    two = tmp_path / "two"
    make_images(two, per_class=(3, 3))  # 2 classes, the teacher has 3
    config = FitConfig.from_options(cache=unlabelled_cache, alpha=1.0, eval_dataset=f"imagefolder:{two}", **fit_options)
    with pytest.raises(ValueError, match="has 2 classes but the teacher's targets 3"):
        fit(config)


def test_subset_per_class_is_refused_on_unlabelled_data(unlabelled_cache, fit_options):
    with pytest.raises(ValueError, match="--subset 2 keeps images per class, but this dataset is unlabelled"):
        fit(FitConfig.from_options(cache=unlabelled_cache, alpha=1.0, subset=2, eval_dataset="none", **fit_options))


def test_a_sweep_refuses_label_terms_on_an_unlabelled_cache_before_any_run(unlabelled_cache, fit_options, tmp_path):
    base = FitConfig.from_options(cache=unlabelled_cache, **{**fit_options, "out": str(tmp_path / "sweep")})
    with pytest.raises(ValueError, match="--with-ce trains on labels alone and .*u.h5 holds no labels"):
        sweep(SweepConfig(base, students=("linear",), alphas=(1.0,), with_ce=True))
    with pytest.raises(ValueError, match=r"unlabelled, so KD with a label term \(--alpha 0.5\)"):
        sweep(SweepConfig(base, students=("linear",), alphas=(1.0, 0.5)))  # the second run's alpha
    assert not (tmp_path / "sweep").exists()
