"""Run configuration files (JSON, YAML, a finished run's summary.json) and TensorBoard logs."""

import json

import pytest
import torch
from click.testing import CliRunner

from softlabels.cli import main as softlabels_cli
from trainer.cli import main as trainer_cli


def run(*args):
    return CliRunner().invoke(trainer_cli, [str(a) for a in args])


def test_a_run_repeats_from_its_summary(image_folder, tmp_path):
    config = {
        "dataset": f"imagefolder:{image_folder}",
        "student": "small_cnn",
        "loss": "ce",
        "optim": {"epochs": 2, "batch_size": 6},
        "workers": 0,
        "device": "cpu",
        "progress": False,
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    first = run("fit", "--config", tmp_path / "run.json", "--out", tmp_path / "a")
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["config"]["optim"]["epochs"] == 2 and summary["config"]["optim"]["batch_size"] == 6
    again = run("fit", "--config", tmp_path / "a" / "summary.json", "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    repeat = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert repeat["test_accuracy"] == summary["test_accuracy"]
    a, b = (torch.load(tmp_path / name / "last.pt", weights_only=True)["model"] for name in ("a", "b"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    flags_win = run("fit", "--config", tmp_path / "a" / "summary.json", "--epochs", "1", "--out", tmp_path / "c")
    assert flags_win.exit_code == 0 and json.loads((tmp_path / "c" / "summary.json").read_text())["epochs"] == 1


def test_yaml_configs_and_bad_ones(image_folder, tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "run.yaml").write_text(
        f"dataset: imagefolder:{image_folder}\nstudent: linear\nloss: ce\n"
        "epochs: 1\nworkers: 0\ndevice: cpu\nprogress: false\n"
    )
    result = run("fit", "--config", tmp_path / "run.yaml", "--out", tmp_path / "y")
    assert result.exit_code == 0, result.output
    (tmp_path / "bad.json").write_text(json.dumps({"student": "linear", "epoch": 3}))
    result = run("fit", "--config", tmp_path / "bad.json", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "names unknown option(s): epoch" in result.output
    (tmp_path / "broken.json").write_text("{not json")
    assert "is not valid JSON" in run("fit", "--config", tmp_path / "broken.json", "--out", tmp_path / "x").output
    result = run("fit", "--config", tmp_path / "run.yaml")
    assert result.exit_code == 2 and "Missing option '--out'" in result.output


def test_build_takes_a_config_file(image_folder, teacher_weights, tmp_path):
    (tmp_path / "build.json").write_text(
        json.dumps(
            {
                "dataset": f"imagefolder:{image_folder}",
                "teacher": "small_cnn",
                "weights": str(teacher_weights),
                "views": 2,
                "augment": "flip",
                "workers": 0,
                "device": "cpu",
            }
        )
    )
    result = CliRunner().invoke(
        softlabels_cli, ["build", "--config", str(tmp_path / "build.json"), "--out", str(tmp_path / "c.h5")]
    )
    assert result.exit_code == 0 and "18 samples x 2 view(s)" in result.output, result.output


def test_tensorboard_logs_every_step_and_epoch(image_folder, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(
        "fit",
        "--dataset",
        f"imagefolder:{image_folder}",
        "--student",
        "linear",
        "--loss",
        "ce",
        "--epochs",
        "2",
        "--batch-size",
        "6",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--log",
        "tensorboard",
        "--out",
        tmp_path / "tb",
    )
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss_step", "train/lr", "epoch/train_loss", "epoch/eval_accuracy"} <= tags
    assert [e.step for e in events.Scalars("train/loss_step")] == list(range(6))  # 3 steps x 2 epochs
    assert [e.step for e in events.Scalars("epoch/train_loss")] == [1, 2]


# Values a JSON or YAML file can hold that no flag can: each refused as the flag's type would refuse it.
BAD_FIT_VALUES = [
    ("epochs", "ten", "expected a whole number"),
    ("epochs", 1.7, "expected a whole number"),
    ("epochs", True, "expected a whole number"),  # true is a flag's value, not one epoch
    ("epochs", 0, "not in the range x>=1"),
    ("lr", "0.1", "expected a number"),  # text, not a number
    ("batch_size", [16], "expected a whole number"),  # a list only for an option that repeats
    ("progress", "no", "expected true or false"),
    ("optimizer", "adam", "'adam' is not one of 'sgd', 'adamw'"),
    ("mean", ["a"], "not a list of numbers"),
]


@pytest.mark.parametrize("key, value, expected", BAD_FIT_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_FIT_VALUES])
def test_a_bad_config_value_is_one_line_and_exit_2(image_folder, tmp_path, key, value, expected):
    config = {"dataset": f"imagefolder:{image_folder}", "student": "linear", "loss": "ce", key: value}
    (tmp_path / "run.json").write_text(json.dumps(config))
    result = run("fit", "--config", tmp_path / "run.json", "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {tmp_path / 'run.json'}: {key} = {json.dumps(value)}: ")
    assert expected in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_config_values_take_the_forms_a_run_records(image_folder, tmp_path):
    """A whole-number float is a count; a list is a repeated option's or a per-channel value's; a single
    value of a repeated option is one repeat; null leaves the default."""
    config = {
        "dataset": f"imagefolder:{image_folder}",
        "student": "linear",
        "loss": "ce",
        "epochs": 1.0,
        "batch_size": 6,
        "mean": [0.5, 0.5, 0.5],
        "std": "0.25,0.25,0.25",
        "log": [],
        "lr": None,
        "workers": 0,
        "device": "cpu",
        "progress": False,
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    result = run("fit", "--config", tmp_path / "run.json", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())["config"]
    assert saved["optim"]["epochs"] == 1 and saved["optim"]["lr"] == 0.05
    assert saved["model"]["mean"] == [0.5, 0.5, 0.5] and saved["model"]["std"] == [0.25, 0.25, 0.25]


BAD_BUILD_VALUES = [
    ("views", "ten", "expected a whole number"),
    ("views", 1.7, "expected a whole number"),
    ("views", True, "expected a whole number"),
    ("batch_size", [16], "expected a whole number"),
    ("amp", "yes", "expected true or false"),
    ("dtype", 16, "expected one of: float16, float32"),
    ("teacher", [1], "teacher = 1: expected text"),  # a repeated option's values, each checked
]


@pytest.mark.parametrize("key, value, expected", BAD_BUILD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_BUILD_VALUES])
def test_a_bad_build_config_value_is_one_line_and_exit_2(image_folder, tmp_path, key, value, expected):
    config = {"dataset": f"imagefolder:{image_folder}", "teacher": "small_cnn", key: value}
    (tmp_path / "build.json").write_text(json.dumps(config))
    result = CliRunner().invoke(
        softlabels_cli, ["build", "--config", str(tmp_path / "build.json"), "--out", str(tmp_path / "c.h5")]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {tmp_path / 'build.json'}: {key} = ")
    assert expected in lines[0], lines[0]
