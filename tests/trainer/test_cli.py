"""`trainer` on the command line: a short real run, and one clear line for every bad input."""

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from trainer import engine
from trainer.cli import main

QUICK = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_fit_from_a_cache(cache, tmp_path):
    result = run("fit", "--cache", cache, "--student", "mlp", *QUICK, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("mlp [kd]: test accuracy ") and "wrote" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    # the documented defaults (README "T and alpha", docs/training.md), as literals: users rely on these values
    assert summary["config"]["objective"]["temperature"] == 4.0 and summary["config"]["objective"]["alpha"] == 0.9
    assert summary["config"]["optim"]["clip_grad_norm"] == 2.0 and summary["loss"] == "kd"


@pytest.mark.parametrize(
    "splits, used", [(("train", "test", "val"), "test"), (("train", "val"), "val"), (("train",), None)]
)
def test_evaluation_finds_test_then_val_and_says_which(make_images, tmp_path, splits, used):
    images = make_images(tmp_path / "images", splits=splits)
    result = run("fit", "--dataset", f"imagefolder:{images}", "--student", "mlp", *QUICK, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    if used:
        assert f"test accuracy {summary['test_accuracy']:.2%} on imagefolder:{images} ({used})" in result.output
        assert summary["eval_set"] == f"imagefolder:{images} ({used})"
    else:
        assert "test accuracy n/a (no held-out set found beside the training data: pass --eval-dataset SPEC)" in (
            result.output
        )
        assert summary["eval_set"] is None and summary["test_accuracy"] is None


def test_sweep_from_the_command_line(cache, tmp_path):
    result = run(
        "sweep",
        "--cache",
        cache,
        "--student",
        "linear",
        "--student",
        "mlp",
        "--temperature",
        "1",
        "--temperature",
        "2",
        *QUICK,
        "--out",
        tmp_path / "sweep",
    )
    assert result.exit_code == 0, result.output
    assert "[4/4]" in result.output and "(4 runs, 0 failed)" in result.output
    assert (tmp_path / "sweep" / "leaderboard.md").exists()


def test_python_dash_m_trainer():
    done = subprocess.run([sys.executable, "-m", "trainer", "fit", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--inconsistent-augment" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cache", "{cache}", "--student", "resnet9000"], "unknown model 'resnet9000'; choose one of: cifar_resnet"),
        (["--cache", "{tmp}/missing.h5", "--student", "mlp"], "cache not found: "),
        (["--dataset", "imagefolder:{images}", "--student", "mlp", "--loss", "kd"], "--loss kd needs teacher outputs"),
        (["--cache", "{cache}", "--student", "mlp", "--temperature", "0"], "temperature must be positive"),
        (["--cache", "{cache}", "--student", "mlp", "--alpha", "1.5"], r"alpha must lie in [0, 1]"),
        (["--cache", "{cache}", "--student", "mlp", "--augment", "cifar"], "inconsistent teaching"),
        (["--dataset", "imagefolder:{images}", "--student", "mlp", "--teacher", "small_cnn"], "needs --weights"),
        (["--student", "mlp"], "give --cache FILE"),
        (
            [
                "--dataset",
                "imagefolder:{images}",
                "--student",
                "mlp",
                "--teacher",
                "small_cnn",
                "--weights",
                "{tmp}/t.pt",
                "--loss",
                "ce",
            ],
            "does not use --teacher",
        ),
        (["--cache", "{cache}", "--teacher", "small_cnn", "--student", "mlp"], "exclude each other"),
        (["--dataset", "nosuchdata", "--student", "mlp"], "unknown dataset 'nosuchdata'"),
        (["--cache", "{cache}", "--student", "mlp", "--ensemble", "nan,1"], "--ensemble nan,1: weight nan; weights"),
        (["--cache", "{cache}", "--student", "mlp", "--ensemble", "inf,1"], "--ensemble inf,1: weight inf; weights"),
        (["--cache", "{cache}", "--student", "mlp", "--ensemble", "1e400,1"], "1e400,1: weight inf; weights must"),
        (["--cache", "{cache}", "--student", "mlp", "--ensemble", "0,0"], "weights summing to 0.0; weights must"),
        (["--cache", "{cache}", "--student", "mlp", "--ensemble", "-1,2"], "weight -1.0; weights must be finite"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, cache, image_folder, tmp_path):
    filled = [a.format(cache=cache, tmp=tmp_path, images=image_folder) for a in args]
    result = run("fit", *filled, *QUICK, "--out", tmp_path / "run")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_incomplete_cache_is_refused(build_options, tmp_path):
    from softlabels import store

    layout = store.Layout(num_samples=2, num_classes=3)
    writer = store.CacheWriter.create(tmp_path / "cache.h5", layout, ["a", "b"], [0, 1], store.Metadata())
    writer.close()
    result = run("fit", "--cache", tmp_path / "cache.h5", "--student", "mlp", *QUICK, "--out", tmp_path / "run")
    assert result.exit_code == 1 and "partial build exists" in result.output
    (tmp_path / "cache.h5.partial").rename(tmp_path / "renamed.h5")
    result = run("fit", "--cache", tmp_path / "renamed.h5", "--student", "mlp", *QUICK, "--out", tmp_path / "run")
    assert result.exit_code == 1 and "incomplete" in result.output


def test_sweep_needs_an_out_folder_and_a_student(cache, tmp_path):
    result = CliRunner().invoke(main, ["sweep", "--cache", cache, "--student", "mlp"])
    assert result.exit_code == 2 and "Missing option '--out'" in result.output
    result = CliRunner().invoke(main, ["sweep", "--cache", cache, "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "Missing option '--student'" in result.output


def test_sweep_reads_its_grid_and_fit_options_from_a_config_file(cache, tmp_path):
    config = tmp_path / "sweep.json"
    config.write_text(json.dumps({"cache": cache, "students": ["linear"], "temperatures": [1, 2], "epochs": 1}))
    result = run("sweep", "--config", config, "--epochs", "2", "--workers", "0", "--out", tmp_path / "sweep")
    assert result.exit_code == 0, result.output
    assert "(2 runs, 0 failed)" in result.output
    summary = json.loads((tmp_path / "sweep" / "linear-kd-T2-a0.9" / "summary.json").read_text())
    assert summary["epochs"] == 2  # the flag wins over the file
    config.write_text(json.dumps({"cache": cache, "students": "linear", "temperatures": ["two"]}))
    result = run("sweep", "--config", config, "--out", tmp_path / "other")
    assert result.exit_code == 2 and 'temperatures = "two": expected' in result.output


def test_a_fits_summary_is_a_sweeps_config(cache, tmp_path):
    assert run("fit", "--cache", cache, "--student", "linear", *QUICK, "--out", tmp_path / "kd").exit_code == 0
    again = ["--config", tmp_path / "kd" / "summary.json", "--temperature", "1", "--temperature", "3"]
    result = run("sweep", *again, "--out", tmp_path / "grid")
    assert result.exit_code == 0, result.output
    assert "(2 runs, 0 failed)" in result.output and (tmp_path / "grid" / "linear-kd-T3-a0.9").is_dir()


@pytest.mark.parametrize("command", ["fit", "sweep"])
def test_ctrl_c_says_what_is_kept_and_exits_130(cache, tmp_path, monkeypatch, command):
    """A real SIGINT at the 7th training step (epoch 2): one line naming the checkpoint and --resume."""
    step, calls = engine.train_step, [0]

    def interrupted_step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 7:
            os.kill(os.getpid(), signal.SIGINT)
        return step(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", interrupted_step)
    monkeypatch.setattr("trainer.stream.train_step", interrupted_step)
    out = tmp_path / "run"
    args = [command, "--cache", cache, "--student", "linear", "--epochs", "2", "--batch-size", "4", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--workers", "0", "--no-progress"])
    assert result.exit_code == 130, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: interrupted: ") and "last.pt" in line and line.endswith("--resume to continue")
    assert CliRunner().invoke(main, [*args, "--workers", "0", "--no-progress", "--resume"]).exit_code == 0
    calls[0] = 4  # Ctrl-C at the third step of a new run (epoch 1): nothing is kept yet
    again = [*args[:-1], str(tmp_path / "again"), "--workers", "0", "--no-progress"]
    result = CliRunner().invoke(main, again)
    assert (
        result.exit_code == 130
        and "error: interrupted before the first checkpoint: run the same command" in result.output
    )
