"""Scripting (issue 16): `--json` (one object on stdout, also for errors), `--quiet`, `--no-progress` and
`--debug` on every command, progress as plain lines when stderr is not a terminal, and the exit codes
docs/cli.md documents."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from softlabels import store
from softlabels.cli import main
from trainer.cli import main as trainer_main


def run(*args, cli=main):
    return CliRunner().invoke(cli, [str(a) for a in args])


def build_args(build_options, out, *extra):
    return [
        "build",
        "--dataset",
        build_options["dataset"],
        "--teacher",
        "small_cnn",
        "--weights",
        build_options["weights"],
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        out,
        *extra,
    ]


@pytest.mark.parametrize("cli", [main, trainer_main], ids=["softlabels", "trainer"])
def test_every_command_takes_quiet_debug_and_no_progress(cli):
    for name, command in cli.commands.items():
        flags = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
        assert {"--quiet", "-q", "--debug"} <= flags, name
        if name not in ("info", "ls"):  # these two print no progress
            assert "--no-progress" in flags, name


def test_json_on_build_verify_merge_and_export(build_options, tmp_path):
    outputs = {}
    for i in range(2):
        result = run(*build_args(build_options, tmp_path / f"part{i}.h5", "--shard", f"{i}/2", "--json"))
        assert result.exit_code == 0, result.output
        outputs[f"build{i}"] = json.loads(result.stdout)
    assert outputs["build0"]["ok"] and outputs["build0"]["num_samples"] == 9
    assert set(outputs["build1"]) >= {"path", "num_views", "teacher_accuracy", "seconds", "images_per_second"}
    merged = tmp_path / "all.h5"
    result = run("merge", tmp_path / "part0.h5", tmp_path / "part1.h5", "--out", merged, "--json")
    outputs["merge"] = json.loads(result.stdout)
    assert outputs["merge"] == {
        "ok": True,
        "kind": "rows",
        "path": str(merged),
        "inputs": [str(tmp_path / "part0.h5"), str(tmp_path / "part1.h5")],
        "num_samples": 18,
        "num_views": 1,
        "num_teachers": 1,
        "teacher_accuracy": store.read_info(merged).teacher_accuracy,
    }
    result = run("verify", merged, "--dataset", build_options["dataset"], "--json")
    report = json.loads(result.stdout)
    assert report["ok"] and [c["check"] for c in report["checks"]] == ["file", "samples", "content"]
    assert report["checks"][0]["blocks"] == 1 and report["checks"][2]["checked"] is True
    result = run("export", merged, "--out", tmp_path / "all.npz", "--json")
    assert json.loads(result.stdout) == {
        "ok": True,
        "path": str(tmp_path / "all.npz"),
        "format": "npz",
        "rows": 18,
        "bytes": (tmp_path / "all.npz").stat().st_size,
    }


def test_json_errors_are_one_object_on_stdout_too(tmp_path):
    result = run("verify", tmp_path / "missing.h5", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "ok": False,
        "error": f"cache not found: {tmp_path / 'missing.h5'}",
        "exit_code": 1,
    }
    assert result.stderr.strip() == f"error: cache not found: {tmp_path / 'missing.h5'}"


def test_quiet_prints_nothing_but_keeps_the_exit_status(build_options, tmp_path):
    out = tmp_path / "c.h5"
    result = run(*build_args(build_options, out, "--quiet"))
    assert result.exit_code == 0 and result.output == "" and out.exists()
    for args in (["verify", out], ["info", out], ["export", out, "--out", tmp_path / "c.npz"]):
        result = run(*args, "-q")
        assert result.exit_code == 0 and result.output == "", args
    result = run("verify", tmp_path / "missing.h5", "--quiet")
    assert result.exit_code == 1 and result.output.startswith("error: cache not found")  # errors still show
    result = run("fit", "--cache", out, "--student", "linear", "--epochs", "1", "--workers", "0", "--device", "cpu",
                 "--out", tmp_path / "run", "--quiet", cli=trainer_main)  # fmt: skip
    assert result.exit_code == 0 and result.output == "", result.output


def test_progress_is_plain_lines_when_stderr_is_no_terminal(build_options, tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE")
    monkeypatch.setenv("SOFTLABELS_PROGRESS_INTERVAL", "0")  # every update a line (30 s by default)
    out = tmp_path / "c.h5"
    result = run(*build_args(build_options, out, "--compression", "gzip"))
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr
    lines = result.stderr.splitlines()
    for phase in ("teacher pass: 18/18 img (100%)", "re-verifying: 18/18 row (100%)", "compressing (gzip): "):
        assert any(line.startswith(phase) for line in lines), (phase, result.stderr)
    assert any(line.startswith("teacher pass: 4/18 img (22%)") and " left" in line for line in lines)
    partial_runs = {
        "verifying blocks: 18/18 row": ["verify", out, "--dataset", build_options["dataset"]],
        "hashing samples: 18/18 row": ["verify", out, "--dataset", build_options["dataset"]],
        "exporting: 18/18 row": ["export", out, "--out", tmp_path / "c.npz"],
        "reading: 18/18 row": ["inspect", out, "--out", tmp_path / "report"],
    }
    for phase, args in partial_runs.items():
        result = run(*args)
        assert result.exit_code == 0 and phase in result.stderr, (phase, result.output)
        assert "\r" not in result.stderr
    assert run(*args, "--no-progress").stderr == ""


def test_usage_errors_exit_2_and_documented_codes(tmp_path):
    assert run("verify").exit_code == 2
    assert run("build", "--workers", "-1").exit_code == 2
    readme = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()  # the exit-status table
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 75 |", "| 130 |"):
        assert code in readme, code
