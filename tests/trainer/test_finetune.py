"""Weights carry their config: a run's best.pt / best.safetensors build a cache with no other flag,
and a pretrained model fine-tunes with a new head into a teacher."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from softlabels import store
from softlabels.cli import main as softlabels_cli
from softlabels.models.weights import read_weights
from trainer.cli import main as trainer_cli

QUICK = ["--workers", "0", "--device", "cpu", "--no-progress", "--batch-size", "6"]


def fit(*args):
    result = CliRunner().invoke(trainer_cli, ["fit", *map(str, args), *QUICK])
    assert result.exit_code == 0, result.output
    return result


def build(image_folder, out, *args):
    result = CliRunner().invoke(
        softlabels_cli,
        [
            "build",
            "--dataset",
            f"imagefolder:{image_folder}",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--out",
            str(out),
            *map(str, args),
        ],
    )
    assert result.exit_code == 0, result.output
    return store.read_info(out)


def test_a_runs_weights_build_a_cache_with_no_other_flag(image_folder, tmp_path):
    run = tmp_path / "teacher"
    fit(
        "--dataset",
        f"imagefolder:{image_folder}",
        "--student",
        "small_cnn",
        "--loss",
        "ce",
        "--epochs",
        "1",
        "--out",
        run,
    )
    config = json.loads((run / "best.json").read_text())
    assert config["model"] == "small_cnn" and config["classes"] == ["cat", "dog", "frog"]
    assert config["input"]["image_size"] == 8
    from_pt = build(image_folder, tmp_path / "pt.h5", "--weights", run / "best.pt")
    from_st = build(image_folder, tmp_path / "st.h5", "--weights", run / "best.safetensors")
    assert from_pt.teacher.spec == from_st.teacher.spec == "small_cnn"
    assert from_pt.input.to_dict() == config["input"]
    np.testing.assert_array_equal(
        store.CacheTargets(tmp_path / "pt.h5").logits(5), store.CacheTargets(tmp_path / "st.h5").logits(5)
    )
    weights = read_weights(run / "best.safetensors")
    assert weights.spec == "small_cnn" and weights.num_classes == 3


def test_old_checkpoints_still_load(image_folder, teacher_weights, tmp_path):
    """A version-0.1 trainer checkpoint: a flat config dict, preprocessing and classes beside the weights."""
    state = torch.load(teacher_weights, weights_only=True)["state_dict"]
    old = {
        "model": state,
        "config": {"student": "small_cnn", "epochs": 3},
        "classes": ["cat", "dog", "frog"],
        "preprocessing": {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2], "image_size": 8},
    }
    torch.save(old, tmp_path / "old.pt")
    info = build(image_folder, tmp_path / "old.h5", "--weights", tmp_path / "old.pt")
    assert info.teacher.spec == "small_cnn" and info.input.mean == (0.4, 0.4, 0.4)
    plain = build(image_folder, tmp_path / "plain.h5", "--teacher", "small_cnn", "--weights", teacher_weights)
    assert plain.input.mean == (0.485, 0.456, 0.406)  # a bare state dict: the image folder's defaults
    result = CliRunner().invoke(
        softlabels_cli,
        [
            "build",
            "--dataset",
            f"imagefolder:{image_folder}",
            "--weights",
            str(teacher_weights),
            "--out",
            str(tmp_path / "x.h5"),
        ],
    )
    assert result.exit_code == 1 and "give --teacher SPEC" in result.output


def test_a_pretrained_timm_model_fine_tunes_into_a_teacher(image_folder, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "in1k.pt")  # 1000 classes, as published
    run = tmp_path / "ft"
    result = fit(
        "--dataset",
        f"imagefolder:{image_folder}",
        "--student",
        "timm:test_resnet",
        "--weights",
        tmp_path / "in1k.pt",
        "--loss",
        "ce",
        "--epochs",
        "1",
        "--eval-dataset",
        "none",
        "--out",
        run,
    )
    assert "a new 3-class head (fc.weight, fc.bias)" in result.output
    info = build(image_folder, tmp_path / "ft.h5", "--weights", run / "best.pt")
    assert info.teacher.spec == "timm:test_resnet"
    assert (info.input.image_size, info.input.resize, info.input.interpolation) == (160, 168, "bilinear")
    done = CliRunner().invoke(
        softlabels_cli, ["verify", str(tmp_path / "ft.h5"), "--recompute", "4", "--device", "cpu"]
    )
    assert done.exit_code == 0 and "reproduces 4 samples" in done.output, done.output
