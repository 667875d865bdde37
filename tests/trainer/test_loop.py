"""fit end to end: outputs, exact resume, the teacher never needed with a cache, online KD, schedules."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels import store, threads
from softlabels.build import BuildConfig, build_cache
from softlabels.models.teachers import load_teacher
from softlabels.views import Normalize
from tests.trainer.witness import Witness
from trainer import FitConfig, fit
from trainer.config import InconsistentAugmentWarning
from trainer.engine import Hook
from trainer.optim import lr_factor


def test_fit_from_a_cache_writes_every_output(cache, fit_options, tmp_path):
    summary = fit(FitConfig.from_options(cache=cache, **fit_options))
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {
        "summary.json",
        "metrics.jsonl",
        "metrics.csv",
        "last.pt",
        "best.pt",
        "curves.png",
    }
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["loss"] == "kd" and summary["epochs"] == 2 and summary["finished"]
    assert 0 <= summary["test_accuracy"] <= 1 and summary["best_accuracy"] >= summary["test_accuracy"]
    assert summary["images_per_second"] > 0 and summary["peak_rss_mb"] > 0
    assert summary["cache_fingerprint"].startswith("sha256:")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert (out / "metrics.csv").read_text().startswith("epoch,lr,train_loss")
    for name in ("last.pt", "best.pt"):
        state = torch.load(out / name, weights_only=True)
        assert (
            state["config"]["model"]["student"] == "small_cnn"
            and state["cache_fingerprint"] == summary["cache_fingerprint"]
        )
    assert "optimizer" in torch.load(out / "last.pt", weights_only=True)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_trained_checkpoint_is_a_teacher_for_softlabels_build(fit_options, image_folder, tmp_path):
    fit(FitConfig.from_options(dataset=f"imagefolder:{image_folder}", **fit_options))
    best = tmp_path / "run" / "best.pt"
    teacher = load_teacher("small_cnn", weights=str(best), num_classes=3, image_size=8)
    assert teacher.weights_sha256
    trained = torch.load(best, weights_only=True)["model"]
    loaded = teacher.model.state_dict()
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)
    fresh = load_teacher("small_cnn", num_classes=3, image_size=8).model.state_dict()
    assert not all(torch.equal(fresh[k], trained[k]) for k in trained)  # trained weights, not an initialisation


def test_training_works_with_the_teachers_file_deleted(cache, fit_options, teacher_weights):
    teacher_weights.unlink()
    assert fit(FitConfig.from_options(cache=cache, **fit_options))["finished"]


def test_resume_continues_exactly(multiview_cache, fit_options, tmp_path):
    """2 epochs, stop, resume 2 more == 4 epochs straight: same weights, optimizer, schedule and history."""
    straight = dict(fit_options, epochs=4, out=str(tmp_path / "straight"))
    split = dict(fit_options, epochs=4, out=str(tmp_path / "split"))
    fit(FitConfig.from_options(cache=multiview_cache, **straight))
    first = fit(FitConfig.from_options(cache=multiview_cache, stop_after=2, **split))
    assert first["epochs"] == 2 and not first["finished"]
    resumed = fit(FitConfig.from_options(cache=multiview_cache, resume=True, **split))
    assert resumed["epochs"] == 4 and resumed["finished"]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


@pytest.fixture
def two_threads():
    """torch allowed 2 intra-op threads (the test session runs with 1), whatever the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_resumed_run_keeps_the_threads_it_was_trained_with(cache, fit_options, monkeypatch, two_threads):
    """A thread count changes the order of a backward pass's sums: the measured count is held and saved,
    and a resumed run keeps it however many cores the machine has free by then."""
    monkeypatch.setattr(threads, "CHECK_EVERY_S", 0.0)  # a decision at every batch: held from the second
    seen = []

    class Threads(Hook):
        def on_epoch_end(self, run, progress, record):
            seen.append(torch.get_num_threads())

    monkeypatch.setattr(threads, "choose_threads", lambda *measured: 1)  # a busy machine
    fit(FitConfig.from_options(cache=cache, stop_after=1, **fit_options), hooks=[Threads()])
    assert torch.load(Path(fit_options["out"]) / "last.pt", weights_only=True)["threads"] == 1
    monkeypatch.setattr(threads, "choose_threads", lambda *measured: 2)  # quiet by the time it resumes
    fit(FitConfig.from_options(cache=cache, resume=True, **fit_options), hooks=[Threads()])
    assert seen == [1, 1]
    fit(FitConfig.from_options(cache=cache, **{**fit_options, "out": fit_options["out"] + "-2"}), hooks=[Threads()])
    assert seen == [1, 1, 2, 2]  # a new run measures for itself


def test_resume_refuses_another_student_or_cache(cache, multiview_cache, fit_options):
    fit(FitConfig.from_options(cache=cache, stop_after=1, **fit_options))
    with pytest.raises(ValueError, match="cannot resume .*student: checkpoint has 'small_cnn', this run 'mlp'"):
        fit(FitConfig.from_options(cache=cache, resume=True, **{**fit_options, "student": "mlp"}))
    with pytest.raises(ValueError, match="cannot resume .*cache_targets"):
        fit(FitConfig.from_options(cache=multiview_cache, resume=True, **fit_options))
    with pytest.raises(FileExistsError, match="--resume"):
        fit(FitConfig.from_options(cache=cache, **fit_options))


def test_online_kd_with_augmentation(image_folder, teacher_weights, fit_options):
    """Online KD: every step's targets are the teacher's logits on that step's augmented batch."""
    witness = Witness()
    options = dict(dataset=f"imagefolder:{image_folder}", teacher="small_cnn", weights=str(teacher_weights))
    summary = fit(FitConfig.from_options(**options, augment="cifar", **fit_options), hooks=[witness])
    assert summary["loss"] == "kd" and summary["finished"] and len(witness.steps) == 10
    teacher = load_teacher("small_cnn", weights=teacher_weights, num_classes=3, image_size=8)
    plain = Witness()
    fit(FitConfig.from_options(**{**options, **fit_options, "out": fit_options["out"] + "-plain"}), hooks=[plain])
    for step in witness.steps:
        with torch.inference_mode():
            expected = teacher.model(Normalize(teacher.input)(step.images))
        torch.testing.assert_close(step.targets, expected, rtol=1e-5, atol=1e-5)
        assert step.targets.abs().sum() > 0
    assert any(not torch.equal(a.images, b.images) for a, b in zip(witness.steps, plain.steps))  # augmented


def test_labels_only_with_adamw_and_cosine(image_folder, fit_options, tmp_path):
    summary = fit(
        FitConfig.from_options(
            dataset=f"imagefolder:{image_folder}",
            optimizer="adamw",
            schedule="cosine",
            warmup_epochs=0.5,
            eval_dataset="none",
            subset=3,
            **fit_options,
        )
    )
    assert summary["loss"] == "ce" and summary["test_accuracy"] is None and summary["finished"]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    state = next(iter(last["optimizer"]["state"].values()))
    assert {"exp_avg", "exp_avg_sq"} <= set(state)  # Adam's moments, not SGD's momentum
    group = last["optimizer"]["param_groups"][0]
    # 9 samples in batches of 4 (a lone last sample dropped): 2 steps an epoch, warmup 1 step, 4 in all
    assert last["scheduler"]["last_epoch"] == 4 and group["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine's end
    # each epoch's first step: step 0 ends the warmup (1.0), step 2 is a third down the cosine (0.75)
    assert [round(record["lr"] / group["initial_lr"], 6) for record in last["history"]] == [1.0, 0.75]


def test_random_augmentation_with_a_cache_needs_the_explicit_flag(cache, fit_options):
    with pytest.raises(ValueError, match="inconsistent"):
        fit(FitConfig.from_options(cache=cache, augment="flip", **fit_options))
    with pytest.warns(InconsistentAugmentWarning):
        fit(
            FitConfig.from_options(
                cache=cache,
                augment="flip",
                inconsistent_augment=True,
                epochs=1,
                **{k: v for k, v in fit_options.items() if k != "epochs"},
            )
        )


def test_mismatched_images_are_refused_before_training(cache, image_folder, make_images, fit_options, tmp_path):
    other = make_images(tmp_path / "other", per_class=(7, 5, 7))
    with pytest.raises(ValueError, match="1 added"):
        fit(FitConfig.from_options(cache=cache, dataset=f"imagefolder:{other}", **fit_options))


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "constant"])
def test_schedules(schedule):
    factors = [lr_factor(step, 100, 10, schedule) for step in range(100)]
    assert max(factors) == pytest.approx(1.0, abs=0.02)
    assert all(0 <= f <= 1 for f in factors)
    if schedule in ("onecycle", "cosine"):
        assert factors[-1] < 0.01 and factors[0] < 0.15
    if schedule == "step":
        assert factors[-1] == pytest.approx(0.01)


def test_onecycle_rises_over_a_quarter_without_warmup():
    factors = [lr_factor(step, 100, 0, "onecycle") for step in range(100)]
    assert factors.index(max(factors)) == 25 and math.isclose(factors[0], 1 / 25)


def test_top_k_cache_and_hard_loss(build_options, fit_options, tmp_path):
    topk = str(
        build_cache(
            BuildConfig.from_options(
                **{**build_options, "out": str(tmp_path / "top2.h5"), "topk": 2, "dtype": "float16"}
            )
        ).path
    )
    witness = Witness()
    summary = fit(FitConfig.from_options(cache=topk, loss="hard", **fit_options), hooks=[witness])
    assert summary["loss"] == "hard" and summary["finished"]
    top1 = np.stack([store.CacheTargets(topk).rows(i).top1() for i in range(18)]).ravel()
    for step in witness.steps:  # the loss is cross-entropy on the teacher's stored arg-max, not the labels
        classes = step.targets.argmax(1)
        assert set(classes.tolist()) <= set(top1.tolist())
        torch.testing.assert_close(step.loss, torch.nn.functional.cross_entropy(step.student, classes))
    assert any(not torch.equal(step.targets.argmax(1), step.labels) for step in witness.steps)


def test_resuming_a_finished_run_trains_no_more(cache, fit_options):
    first = fit(FitConfig.from_options(cache=cache, **fit_options))
    again = fit(FitConfig.from_options(cache=cache, resume=True, loss="kd", **fit_options))  # the default, now explicit
    assert again["epochs"] == 2 and again["test_accuracy"] == first["test_accuracy"]


def test_gradient_clipping_bounds_each_step(cache, fit_options, tmp_path):
    """A vanishing clip norm leaves the weights where they started; 0 turns clipping off."""

    def weights(clip, out):
        fit(
            FitConfig.from_options(
                **{**fit_options, "out": str(tmp_path / out), "epochs": 1},
                cache=cache,
                lr=1.0,
                weight_decay=0.0,
                clip_grad_norm=clip,
                eval_dataset="none",
            )
        )
        return torch.load(tmp_path / out / "last.pt", weights_only=True)["model"]

    torch.manual_seed(0)
    from trainer.students import create_student

    start = create_student("small_cnn", 3, 3, 8).state_dict()
    frozen, free = weights(1e-12, "clipped"), weights(0.0, "free")
    for key in start:
        torch.testing.assert_close(frozen[key], start[key], atol=1e-6, rtol=0)
    assert any(not torch.allclose(free[key], start[key]) for key in start)


def test_long_schedules_on_few_views_without_augmentation_warn(cache, multiview_cache, fit_options, tmp_path):
    import warnings

    from trainer.config import InconsistentAugmentWarning, OverfitRiskWarning

    trap = {**fit_options, "cache": cache, "epochs": 25, "stop_after": 1}
    with pytest.warns(OverfitRiskWarning, match="seen 25 times with no augmentation") as caught:
        summary = fit(FitConfig.from_options(**{**trap, "out": str(tmp_path / "trap")}))
    assert summary["view_uses"] == 25
    message = str(caught[0].message)  # the measured numbers and both ways out
    assert "one view (80 uses) 45.4%" in message and "softlabels build --views 5" in message
    assert "--inconsistent-augment" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverfitRiskWarning)
        fit(FitConfig.from_options(**{**trap, "epochs": 10, "out": str(tmp_path / "short")}))  # the safe regime
        many = fit(FitConfig.from_options(**{**trap, "cache": multiview_cache, "out": str(tmp_path / "views")}))
        augmented = {"augment": "flip", "inconsistent_augment": True}
        with pytest.warns(InconsistentAugmentWarning):  # a way out: no overfit warning
            fit(FitConfig.from_options(**{**trap, **augmented, "out": str(tmp_path / "augmented")}))
    assert many["view_uses"] == pytest.approx(25 / 3)
    from trainer.cli import describe_summary

    assert "each stored view seen 8.33 times" in describe_summary(many, "views")


def test_a_second_trainer_writing_the_same_out_at_once_is_refused(cache, fit_options, holding):
    """Another process writing --out (a running fit or sweep) refuses this run in one line, before it
    writes anything; once that process is gone the folder is free again."""
    out = Path(fit_options["out"])
    with holding(out), pytest.raises(FileExistsError, match=f"^{out} is being written by another trainer .*--out$"):
        fit(FitConfig.from_options(cache=cache, **fit_options))
    assert list(out.iterdir()) == []
    fit(FitConfig.from_options(cache=cache, **fit_options))
    assert (out / "last.pt").exists()
