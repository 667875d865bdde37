"""A cluster's stop signal at any moment of a command, sent for real to real processes: during start-up
(imports, loading, a resume's re-check) it stops with exit 75 and a resumable state; once the work is
done (the last batch, a run writing its outputs) the command finishes, exit 0, naming the signal;
`--resume` of finished work exits 0 and says so. Never 143."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from softlabels import store

# Models that send their own process a signal at a late moment: the teacher on the last batch of a
# build in batches of 5 (18 images: 5, 5, 5, 3), the student while it is evaluated after the last epoch.
LATE_SIGNALS = """
import os, signal
from softlabels.models.zoo import SmallCNN

class LastBatch(SmallCNN):
    def forward(self, x):
        if len(x) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().forward(x)

class WhileEvaluated(SmallCNN):
    def forward(self, x):
        self.trained = self.training or getattr(self, "trained", False)
        if self.trained and not self.training:  # evaluated after training (not probed before it)
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().forward(x)

def last_batch(num_classes, in_channels=3, image_size=8):
    return LastBatch(num_classes, in_channels=in_channels, image_size=image_size)

def while_evaluated(num_classes, in_channels=3, image_size=8):
    return WhileEvaluated(num_classes, in_channels=in_channels, image_size=image_size)
"""


@pytest.fixture
def late(tmp_path):
    path = tmp_path / "late.py"
    path.write_text(LATE_SIGNALS)
    return path


def build_args(image_folder, weights, out, teacher="small_cnn"):
    return [
        "build",
        "--dataset",
        f"imagefolder:{image_folder}",
        "--teacher",
        teacher,
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--batch-size",
        "5",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    ]


def fit_args(cache, out, student="small_cnn", *extra):
    return ["fit", "--cache", str(cache), "--student", student, "--epochs", "1", "--batch-size", "4"] + [
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def command(cli: str, args) -> list[str]:
    return [sys.executable, "-m", cli, *map(str, args)]


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (Linux: the SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def signalled_at_start_up(cli: str, args, signum=signal.SIGTERM) -> subprocess.CompletedProcess:
    """Run a command and send `signum` as soon as its handler is in place, which must be before torch
    is even loaded (the first moments of the command)."""
    process = subprocess.Popen(command(cli, args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not catches(process.pid, signum) and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    early = process.poll() is None and not torch_loaded(process.pid)
    process.send_signal(signum)
    out, err = process.communicate(timeout=300)
    assert early, f"no handler for {signal.Signals(signum).name} before torch was loaded: {err}"
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run(cli: str, args) -> subprocess.CompletedProcess:
    return subprocess.run(command(cli, args), capture_output=True, text=True, timeout=300)


pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads handlers from /proc")


@pytest.mark.slow  # four builds in subprocesses
def test_a_build_signalled_at_start_up_and_at_its_resume_check_resumes_then_says_it_is_complete(
    image_folder, teacher_weights, tmp_path
):
    out = tmp_path / "cache.h5"
    args = build_args(image_folder, teacher_weights, out)
    stopped = signalled_at_start_up("softlabels", args)
    assert stopped.returncode == 75, stopped.stderr
    assert "stopped by SIGTERM" in stopped.stderr and "--resume" in stopped.stderr
    assert store.partial_path(out).exists() and not out.exists()
    again = signalled_at_start_up("softlabels", [*args, "--resume"], signal.SIGUSR1)  # while it re-checks
    assert again.returncode == 75 and "stopped by SIGUSR1" in again.stderr, again.stderr
    resumed = run("softlabels", [*args, "--resume"])
    assert resumed.returncode == 0 and f"wrote {out}" in resumed.stdout, resumed.stderr
    store.verify(out)
    requeued = run("softlabels", [*args, "--resume"])  # a job pre-empted just after it finished, started again
    assert requeued.returncode == 0, requeued.stderr
    assert f"{out} is already complete (18 samples x 1 view(s)" in requeued.stdout
    assert "nothing to resume" in requeued.stdout


def test_a_signal_on_the_last_batch_lets_the_build_finish(image_folder, late, tmp_path):
    import torch

    from softlabels.models.registry import create_model

    weights = tmp_path / "late.pt"
    torch.save(create_model(f"{late}:last_batch", 3, image_size=8).state_dict(), weights)
    out = tmp_path / "cache.h5"
    done = run("softlabels", build_args(image_folder, weights, out, f"{late}:last_batch"))
    assert done.returncode == 0, done.stderr
    assert "note: SIGTERM arrived after the work was complete: nothing to resume" in done.stderr
    store.verify(out)


def test_a_fit_signalled_at_start_up_stops_resumably(build_options, tmp_path):
    from softlabels.build import BuildConfig, build_cache

    cache = build_cache(BuildConfig.from_options(**build_options)).path
    out = tmp_path / "run"
    stopped = signalled_at_start_up("trainer", fit_args(cache, out))
    assert stopped.returncode == 75, stopped.stderr
    assert "stopped by SIGTERM before epoch 1" in stopped.stderr and "--resume" in stopped.stderr
    assert json.loads((out / "summary.json").read_text())["stopped_by"] == "SIGTERM"
    resumed = run("trainer", [*fit_args(cache, out), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "summary.json").read_text())["finished"]


def test_a_signal_while_a_finished_run_writes_its_outputs_lets_it_finish(build_options, late, tmp_path):
    from softlabels.build import BuildConfig, build_cache

    cache = build_cache(BuildConfig.from_options(**build_options)).path
    out = tmp_path / "run"
    done = run("trainer", fit_args(cache, out, f"{late}:while_evaluated"))
    assert done.returncode == 0, done.stderr
    assert "note: SIGUSR1 arrived after the work was complete: nothing to resume" in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and "stopped_by" not in summary and (out / "last.pt").exists()


def test_resume_of_finished_work_exits_0(build_options, tmp_path):
    from softlabels.build import BuildConfig, build_cache
    from softlabels.cli import main as softlabels_main
    from trainer.cli import main as trainer_main

    cache = build_cache(BuildConfig.from_options(**build_options)).path
    args = [f"--{k.replace('_', '-')}={v}" for k, v in build_options.items() if k != "progress"]
    requeued = CliRunner().invoke(softlabels_main, ["build", *args, "--resume", "--no-progress"])
    assert requeued.exit_code == 0 and "is already complete" in requeued.output, requeued.output
    other = CliRunner().invoke(softlabels_main, ["build", *args, "--resume", "--views", "2", "--augment", "flip"])
    assert other.exit_code == 1 and "is complete but was built with other settings (--views" in other.output
    assert "--overwrite" in other.output
    fit = fit_args(cache, tmp_path / "run")
    assert CliRunner().invoke(trainer_main, fit).exit_code == 0
    again = CliRunner().invoke(trainer_main, [*fit, "--resume"])
    assert again.exit_code == 0 and "1 epochs" in again.output, again.output
    sweep = ["sweep", "--cache", str(cache), "--student", "linear", "--epochs", "1", "--workers", "0"]
    sweep += ["--device", "cpu", "--out", str(tmp_path / "sweep")]
    assert CliRunner().invoke(trainer_main, sweep).exit_code == 0
    again = CliRunner().invoke(trainer_main, [*sweep, "--resume"])
    assert again.exit_code == 0 and "(1 runs, 0 failed)" in again.output, again.output
