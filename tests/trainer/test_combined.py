"""A labelled and an unlabelled cache of one teacher trained as one set (`--cache A --cache B`): the
samples of both, the labels used where present, every mismatch refused in one line naming both files."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from softlabels.build import BuildConfig, build_cache
from softlabels.models.registry import create_model
from softlabels.runtime import current_rank
from softlabels.stopping import StopRequest
from trainer import FitConfig, SweepConfig, fit, sweep
from trainer.cli import main
from trainer.losses import Objective, kd_loss
from trainer.setup import build_run, load_data
from trainer.stream import group_streams


@pytest.fixture
def flat_folder(image_folder, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, image in enumerate(sorted((image_folder / "train").rglob("*.png"))[:10]):
        shutil.copy(image, flat / f"{index:03d}.png")
    return flat


@pytest.fixture
def labelled(build_options, tmp_path):
    return str(build_cache(BuildConfig.from_options(**{**build_options, "out": str(tmp_path / "l.h5")})).path)


@pytest.fixture
def unlabelled(build_options, flat_folder, tmp_path):
    options = {
        **build_options,
        "dataset": f"imagefolder:{flat_folder}",
        "out": str(tmp_path / "u.h5"),
        "num_classes": 3,
    }
    return str(build_cache(BuildConfig.from_options(**options)).path)


def cli(*args):
    return CliRunner().invoke(main, ["fit", *args, "--epochs", "1", "--workers", "0", "--device", "cpu"])


def test_the_combined_set_holds_both_caches_samples_in_order(labelled, unlabelled, fit_options):
    config = FitConfig.from_options(cache=(labelled, unlabelled), eval_dataset="none", **fit_options)
    data, _, _ = load_data(config)
    assert len(data.indices) == 18 + 10 and data.source.labelled
    assert (data.source.labels[:18] >= 0).all() and (data.source.labels[18:] == -1).all()
    assert data.classes == ["cat", "dog", "frog"] and len(data.caches) == 2
    alone = load_data(FitConfig.from_options(cache=unlabelled, alpha=1.0, eval_dataset="none", **fit_options))[0]
    image, label, logits = data.dataset[(18 + 3, 0, 0)]
    expected = alone.dataset[(3, 0, 0)]
    assert torch.equal(image, expected[0]) and label == -1 and torch.equal(logits, expected[2])


def test_a_labelled_and_an_unlabelled_cache_train_together_with_the_label_term(
    labelled, unlabelled, image_folder, fit_options, tmp_path
):
    summary = fit(FitConfig.from_options(cache=(labelled, unlabelled), alpha=0.5, **fit_options))
    assert summary["finished"] and 0 <= summary["test_accuracy"] <= 1
    assert summary["train_accuracy"] is not None  # over the 18 labelled images
    assert len(summary["cache_fingerprint"]) == 2
    assert summary["config"]["runtime"]["cache"] == [labelled, unlabelled]
    again = CliRunner().invoke(
        main, ["fit", "--config", str(tmp_path / "run" / "summary.json"), "--out", str(tmp_path / "again")]
    )
    assert again.exit_code == 0, again.output
    first, second = (torch.load(tmp_path / r / "last.pt", weights_only=False)["model"] for r in ("run", "again"))
    assert all(torch.equal(first[k], second[k]) for k in first)  # the config file names both caches


def test_each_sample_mixes_the_targets_it_has_and_the_batch_averages_them():
    """A labelled sample: alpha T^2 KL + (1 - alpha) CE; one without a label: T^2 KL; the batch: their mean."""
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    labels = torch.tensor([0, -1, 2, -1, 1, 1])
    log_s, log_t = F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1)
    kl = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    each = [
        0.7 * 4 * kl[i] + 0.3 * F.cross_entropy(student[i : i + 1], labels[i : i + 1], label_smoothing=0.1)
        if labels[i] >= 0
        else 4 * kl[i]
        for i in range(6)
    ]
    torch.testing.assert_close(kd_loss(student, teacher, labels, 2.0, 0.7, 0.1), torch.stack(each).mean())
    none = torch.full((6,), -1)
    torch.testing.assert_close(kd_loss(student, teacher, none, 2.0, 0.7), kd_loss(student, teacher, none, 2.0, 1.0))
    full = torch.tensor([0, 1, 2, 0, 1, 2])  # a labelled batch: Hinton's formula, as before
    hinton = 0.7 * 4 * kl.mean() + 0.3 * F.cross_entropy(student, full)
    torch.testing.assert_close(kd_loss(student, teacher, full, 2.0, 0.7), hinton)
    ce = Objective("ce")
    assert float(ce(student, None, none)) == 0.0
    kept = labels >= 0
    torch.testing.assert_close(
        ce(student, None, labels), F.cross_entropy(student[kept], labels[kept], reduction="sum") / 6
    )


def test_a_batch_split_over_two_ranks_has_the_loss_of_the_whole_batch():
    """DDP averages the gradients of equal shares: the per-sample mean makes that the whole batch's."""
    torch.manual_seed(1)
    student, teacher = torch.randn(8, 3), torch.randn(8, 3)
    labels = torch.tensor([0, 1, 2, -1, -1, -1, -1, 1])  # 3 labelled in one half, 1 in the other
    halves = [kd_loss(student[i : i + 4], teacher[i : i + 4], labels[i : i + 4], 4.0, 0.5) for i in (0, 4)]
    torch.testing.assert_close(torch.stack(halves).mean(), kd_loss(student, teacher, labels, 4.0, 0.5))


def test_without_labels_in_the_batch_the_step_is_finite(labelled, unlabelled, fit_options):
    """A batch of unlabelled samples alone: the teacher term alone, never 0/0."""
    config = FitConfig.from_options(cache=(unlabelled, labelled), alpha=0.5, eval_dataset="none", **fit_options)
    run = build_run(config, current_rank(), torch.device("cpu"), StopRequest())
    try:
        images = torch.stack([run.data.dataset[(i, 0, 0)][0] for i in range(4)])  # the first 4: unlabelled
        logits = run.student(run.normalize(images))
        targets = torch.stack([run.data.dataset[(i, 0, 0)][2] for i in range(4)])
        loss = run.objective(logits, targets, torch.full((4,), -1)).detach()
        teacher_term = kd_loss(logits.detach(), targets, torch.zeros(4, dtype=torch.long), alpha=1.0)
        assert torch.isfinite(loss)
        torch.testing.assert_close(loss, teacher_term)  # no label: the teacher term alone, at weight 1
    finally:
        run.close()


def test_train_accuracy_counts_only_labelled_images(labelled, unlabelled, fit_options, tmp_path):
    fit(FitConfig.from_options(cache=(labelled, unlabelled), eval_dataset="none", **fit_options))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for record in records:  # a fraction of 18 labelled images, never of 28
        assert any(abs(record["train_accuracy"] - k / 18) < 1e-9 for k in range(19))


def test_ce_on_all_unlabelled_caches_is_refused(unlabelled, build_options, flat_folder, tmp_path):
    options = {**build_options, "dataset": f"imagefolder:{flat_folder}", "out": str(tmp_path / "u2.h5")}
    other = str(build_cache(BuildConfig.from_options(**options, num_classes=3, views=2, augment="flip")).path)
    result = cli("--cache", unlabelled, "--cache", other, "--loss", "ce", "--student", "small_cnn", "--out", "r")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1
    assert f"{unlabelled} and {other} are all unlabelled, so labels only (--loss ce)" in lines[0]


def test_caches_of_other_teachers_are_refused_naming_both_files(labelled, build_options, tmp_path):
    torch.manual_seed(9)
    weights = tmp_path / "other.pt"
    torch.save(create_model("small_cnn", num_classes=3, in_channels=3, image_size=8).state_dict(), weights)
    options = {**build_options, "weights": str(weights), "out": str(tmp_path / "o.h5")}
    other = str(build_cache(BuildConfig.from_options(**options)).path)
    result = cli("--cache", labelled, "--cache", other, "--student", "small_cnn", "--out", str(tmp_path / "r"))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1
    assert f"{labelled} and {other} cannot be trained together: their teachers differ" in lines[0]
    assert not (tmp_path / "r").exists()


def test_caches_with_other_targets_or_input_are_refused(labelled, build_options, tmp_path):
    wider = {**build_options, "out": str(tmp_path / "w.h5"), "mean": (0.4, 0.4, 0.4), "std": (0.2, 0.2, 0.2)}
    other = str(build_cache(BuildConfig.from_options(**wider)).path)
    result = cli("--cache", labelled, "--cache", other, "--student", "small_cnn", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1 and "their views differ" in result.output
    both = {**build_options, "out": str(tmp_path / "e.h5"), "targets": "logits,embedding"}
    other = str(build_cache(BuildConfig.from_options(**both)).path)
    result = cli("--cache", labelled, "--cache", other, "--student", "small_cnn", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1 and "they store different targets (logits against logits,embedding)" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "x"], "--dataset names one dataset, but 2 caches are given"),
        (["--subset", "2"], "--subset 2 keeps images per class, but part of it is unlabelled"),
        (["--student", "sklearn:logistic"], "scikit-learn students learn from one cache; 2 are given"),
    ],
)
def test_what_a_combined_set_cannot_do_is_refused_in_one_line(labelled, unlabelled, tmp_path, extra, message):
    student = [] if "--student" in extra else ["--student", "small_cnn"]
    result = cli("--cache", labelled, "--cache", unlabelled, *student, *extra, "--out", str(tmp_path / "r"))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output


def test_one_cache_given_twice_is_refused(labelled, tmp_path):
    result = cli("--cache", labelled, "--cache", labelled, "--student", "small_cnn", "--out", str(tmp_path / "r"))
    assert result.exit_code == 1 and "a --cache is given twice" in result.output


def test_a_config_file_may_name_one_cache_as_text(labelled, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"cache": labelled, "student": "small_cnn", "eval_dataset": "none"}))
    result = CliRunner().invoke(
        main, ["fit", "--config", str(config), "--out", str(tmp_path / "r"), "--epochs", "1", "--workers", "0"]
    )
    assert result.exit_code == 0, result.output
    assert np.isfinite(json.loads((tmp_path / "r" / "summary.json").read_text())["train_loss"])


def test_a_shared_stream_sweep_over_the_combined_set_equals_each_run_alone(labelled, unlabelled, fit_options, tmp_path):
    base = FitConfig.from_options(
        cache=(labelled, unlabelled), eval_dataset="none", **{**fit_options, "out": str(tmp_path / "sweep")}
    )
    config = SweepConfig(base, students=("small_cnn", "linear"), temperatures=(4.0,), alphas=(0.5,))
    assert len(group_streams(config.runs())) == 1
    assert [row["status"] for row in sweep(config)] == ["ok", "ok"]
    for run in config.runs():
        alone = tmp_path / "alone" / Path(run.runtime.out).name
        fit(run.replace(out=str(alone)))
        mine, reference = (
            torch.load(p / "last.pt", weights_only=True)["model"] for p in (Path(run.runtime.out), alone)
        )
        assert all(torch.equal(mine[key], reference[key]) for key in mine), run.runtime.out


@pytest.mark.slow
def test_two_ranks_on_the_combined_set_match_one_process(labelled, unlabelled, tmp_path):
    """torchrun shards the combined indices; the per-sample mean makes two halves' loss the whole batch's."""
    common = ["fit", "--cache", labelled, "--cache", unlabelled, "--student", "small_cnn", "--alpha", "0.5"]
    common += ["--epochs", "2", "--workers", "0", "--device", "cpu", "--no-progress", "--eval-dataset", "none"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command, batch, out in (([sys.executable], "6", "one"), (launch, "3", "two")):
        done = subprocess.run(
            [*command, "-m", "trainer", *common, "--batch-size", batch, "--out", str(tmp_path / out)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert done.returncode == 0, done.stderr
    one, two = (torch.load(tmp_path / out / "last.pt", weights_only=True)["model"] for out in ("one", "two"))
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5)
