"""Issue 16, trainer side, done for real: a cache replaced while a run starts (a concurrent `os.replace`
fired by inotify at the worst moment), damaged caches and changed images, loader-worker errors,
non-finite losses, SIGTERM/SIGUSR1 mid-epoch then `--resume` (bit for bit), and the minor faults."""

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from click.testing import CliRunner

from trainer.cli import main

# A small_cnn student with faults switched on by environment variables, counted in training forwards.
FAULTY_STUDENT = """
import os, time
from softlabels.models.zoo import SmallCNN

class Faulty(SmallCNN):
    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls = getattr(self, "calls", 0) + 1
            time.sleep(float(os.environ.get("FAULT_DELAY", 0)))
            if self.calls == int(os.environ.get("FAULT_NAN_AT", 0)):
                out = out * float("nan")
            if self.calls == int(os.environ.get("FAULT_OOM_AT", 0)):
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (emulated)")
        return out

def make(num_classes, in_channels=3, image_size=8):
    return Faulty(num_classes, in_channels=in_channels, image_size=image_size)
"""
# 18 training images in batches of 4: 5 optimizer steps per epoch
QUICK = ["--batch-size", "4", "--device", "cpu", "--no-progress", "--eval-dataset", "none"]


@pytest.fixture
def student(tmp_path):
    path = tmp_path / "faulty.py"
    path.write_text(FAULTY_STUDENT)
    return f"{path}:make"


def run(*args, **env):
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update({name: str(value) for name, value in env.items()})
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def command(*args) -> list[str]:
    return [sys.executable, "-m", "trainer", *map(str, args)]


def weights(out):
    return torch.load(out / "last.pt", weights_only=True)


def assert_same_weights(got, want):
    for key in want["model"]:
        torch.testing.assert_close(got["model"][key], want["model"][key], rtol=0, atol=0)


def one_error_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    return lines[0]


# ----------------------------------------------------------------------------- the cache-swap race

IN_OPEN, IN_CLOSE_NOWRITE = 0x20, 0x10


class SwapOnEvent:
    """Replace `path` by `other` with os.replace (what a finishing `build --overwrite` does) the moment
    inotify reports the first `mask` event on it, from a thread of this process while the trainer runs
    in another."""

    def __init__(self, path, other, mask):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0 and self.libc.inotify_add_watch(self.fd, str(path).encode(), mask) >= 0
        self.path, self.other, self.swapped = path, other, False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ready, _, _ = select.select([self.fd], [], [], 120)
        if ready:
            os.replace(self.other, self.path)
            self.swapped = True
        os.close(self.fd)


@pytest.fixture
def other_cache(build_options, tmp_path):
    """The same 18 images through another teacher: same keys and labels, other targets."""
    from softlabels.build import BuildConfig, build_cache
    from softlabels.models.registry import create_model

    torch.manual_seed(1)
    weights_path = tmp_path / "other.pt"
    torch.save(create_model("small_cnn", num_classes=3, in_channels=3, image_size=8).state_dict(), weights_path)
    options = {**build_options, "out": str(tmp_path / "other.h5"), "weights": str(weights_path)}
    return build_cache(BuildConfig.from_options(**options)).path


UNDISTURBED: dict = {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment, extra, outcome",
    [
        (IN_CLOSE_NOWRITE, ["--workers", "0"], "trained"),  # the reproduction: in memory
        (IN_OPEN, ["--workers", "0"], "trained"),
        (IN_OPEN, ["--workers", "1", "--cache-memory-mb", "0"], "refused"),  # a worker would open the new file
        (IN_OPEN, ["--workers", "0", "--cache-memory-mb", "0"], "trained"),
    ],
)
def test_a_cache_replaced_while_the_trainer_starts_never_trains_the_new_targets(
    cache, other_cache, tmp_path, moment, extra, outcome
):
    args = ("fit", "--cache", cache, "--student", "small_cnn", "--epochs", "1", "--threads", "1", *QUICK, *extra)
    if "weights" not in UNDISTURBED:  # the same cache bytes in every case: one undisturbed run serves all
        reference = subprocess.run(command(*args, "--out", tmp_path / "ref"), capture_output=True, text=True)
        assert reference.returncode == 0, reference.stderr
        UNDISTURBED["weights"] = weights(tmp_path / "ref")
    spare = tmp_path / "spare.h5"
    shutil.copy(other_cache, spare)
    swap = SwapOnEvent(cache, spare, moment)
    done = subprocess.run(command(*args, "--out", tmp_path / "run"), capture_output=True, text=True)
    swap.thread.join(5)
    assert swap.swapped, "the file was never replaced"
    if outcome == "trained":  # it trained on the file it checked, exactly as without the swap
        assert done.returncode == 0, done.stderr
        assert_same_weights(weights(tmp_path / "run"), UNDISTURBED["weights"])
    else:
        assert done.returncode == 1, done.stderr
        line = one_error_line(done.stderr)
        assert "is not the file that was checked" in line and "replaced meanwhile" in line
        assert not (tmp_path / "run" / "last.pt").exists()


# ----------------------------------------------------------------------------- damaged caches, changed images


@pytest.mark.parametrize("memory", [["--cache-memory-mb", "0"], []])
def test_a_flipped_byte_in_the_cache_is_refused_before_it_trains(cache, tmp_path, memory, flip_row_byte):
    flip_row_byte(cache, "logits", 5, 2)
    args = ("fit", "--cache", cache, "--student", "small_cnn", "--epochs", "1", "--workers", "0", *QUICK, *memory)
    line = one_error_line(run(*args, "--out", tmp_path / "run").output)
    assert "checksum mismatch in block 0 (rows 0..17)" in line and "softlabels verify" in line
    result = run(*args, "--out", tmp_path / "unchecked", "--no-verify")  # the explicit way out
    assert result.exit_code == 0, result.output


def test_an_image_whose_content_changed_is_refused_by_name(cache, image_folder, tmp_path):
    train = image_folder / "train"
    shutil.copy(train / "dog" / "0001.png", train / "cat" / "0002.png")  # same name and label, other pixels
    args = ("fit", "--cache", cache, "--student", "small_cnn", "--epochs", "1", *QUICK)
    for workers in ("0", "1"):
        result = run(*args, "--workers", workers, "--check-content", "--out", tmp_path / f"run{workers}")
        line = one_error_line(result.output)
        assert f"sample cat/0002.png ({train / 'cat' / '0002.png'}) changed since {cache} was built" in line
    result = run(*args, "--workers", "0", "--out", tmp_path / "unchecked")  # off by default: it costs
    assert result.exit_code == 0, result.output


# ----------------------------------------------------------------------------- loader-worker errors


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_truncated_image_in_a_worker_is_one_line_naming_it(image_folder, tmp_path, workers):
    broken = image_folder / "train" / "dog" / "0003.png"
    truncate(broken)
    args = ("fit", "--dataset", f"imagefolder:{image_folder}", "--student", "small_cnn", "--loss", "ce", *QUICK)
    result = run(*args, "--epochs", "1", "--workers", workers, "--out", tmp_path / "run")
    assert result.exit_code == 1
    line = one_error_line(result.output)
    assert line.startswith(f"error: cannot read sample dog/0003.png ({broken}): ") and "truncated" in line
    assert "DataLoader worker" not in line
    debug = run(*args, "--epochs", "1", "--workers", workers, "--out", tmp_path / "debug", "--debug")
    assert debug.exit_code == 1 and "Traceback" in debug.output and "truncated" in debug.output
    if workers == "1":
        assert "Original Traceback" in debug.output  # the worker's own traceback


@pytest.mark.slow
def test_errors_that_are_not_the_users_keep_their_traceback(cache, student, tmp_path):
    done = subprocess.run(
        command(
            "fit", "--cache", cache, "--student", student, "--epochs", "1", "--workers", "0", *QUICK, "--out", tmp_path
        ),
        capture_output=True,
        text=True,
        env={**os.environ, "FAULT_OOM_AT": "2"},
    )
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "CUDA out of memory" in done.stderr
    assert "error: " not in done.stderr


# ----------------------------------------------------------------------------- non-finite losses


@pytest.mark.parametrize(
    "option, message",
    [
        (["--temperature", "inf"], "--temperature must be a finite number, got inf"),
        (["--temperature", "1e30"], "--temperature 1e+30 makes the KD loss overflow float32"),
        (["--temperature", "1e-45"], "makes the KD loss overflow float32"),
        (["--lr", "nan"], "--lr must be positive, got nan"),
        (["--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--alpha", "nan"], "alpha must lie in [0, 1]"),
        (["--weight-decay", "inf"], "--weight-decay must be a finite number"),
        (["--weight-decay", "-1"], "--weight-decay cannot be negative"),
        (["--label-smoothing", "nan"], "label smoothing must lie in [0, 1), got nan"),
    ],
)
def test_values_that_can_only_give_non_finite_losses_are_refused_up_front(cache, tmp_path, option, message):
    out = tmp_path / "run"
    result = run("fit", "--cache", cache, "--student", "small_cnn", "--workers", "0", *QUICK, *option, "--out", out)
    assert message in one_error_line(result.output)
    assert not out.exists()


def test_a_non_finite_loss_stops_the_run_at_once_and_the_last_checkpoint_resumes(cache, student, tmp_path):
    args = ("fit", "--cache", cache, "--student", student, "--epochs", "3", "--workers", "0", *QUICK)
    reference = run(*args, "--out", tmp_path / "ref")
    assert reference.exit_code == 0, reference.output
    result = run(*args, "--out", tmp_path / "run", FAULT_NAN_AT=8)  # training forward 8: epoch 2, step 3
    line = one_error_line(result.output)
    assert "the loss is nan at epoch 2, step 3 of 5" in line and "last.pt" in line and "--resume" in line
    saved = weights(tmp_path / "run")
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())
    resumed = run(*args, "--out", tmp_path / "run", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_weights(weights(tmp_path / "run"), weights(tmp_path / "ref"))


# ----------------------------------------------------------------------------- pre-emption


def wait_for(condition, process, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never reached the point where the test stops it"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("signum, workers", [(signal.SIGTERM, "0"), (signal.SIGUSR1, "1")])
def test_a_stop_signal_mid_epoch_saves_the_step_and_resume_is_bit_identical(
    multiview_cache, student, tmp_path, signum, workers
):
    args = ("fit", "--cache", multiview_cache, "--student", student, "--epochs", "3", "--threads", "1", *QUICK)
    args = (*args, "--workers", workers)
    reference = subprocess.run(command(*args, "--out", tmp_path / "ref"), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    out = tmp_path / "run"
    victim = subprocess.Popen(
        command(*args, "--out", out),
        env={**os.environ, "FAULT_DELAY": "0.2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the signal reaches the loader worker too, as on SLURM
    )
    wait_for(lambda: (out / "summary.json").exists(), victim)  # epoch 1 and its outputs are done
    time.sleep(0.3)  # into epoch 2 (0.2 s a step)
    os.killpg(victim.pid, signum)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 75, err
    line = one_error_line(err)
    saved = weights(out)
    assert saved["epoch"] == 1 and 1 <= saved["step"] <= 4, "the signal did not land mid-epoch"
    assert f"stopped by {signal.Signals(signum).name} at epoch 2, step {saved['step']} of 5" in line
    assert "--resume" in line
    assert json.loads((out / "summary.json").read_text())["stopped_by"] == signal.Signals(signum).name
    resumed = subprocess.run(command(*args, "--out", out, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(out), weights(tmp_path / "ref"))
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in expected]


# ----------------------------------------------------------------------------- minor faults


def test_a_refused_run_leaves_no_empty_out_folder(cache, tmp_path):
    for bad in (["--cache", tmp_path / "missing.h5"], ["--cache", cache, "--temperature", "-1"]):
        out = tmp_path / "never"
        result = run("fit", *bad, "--student", "small_cnn", "--workers", "0", *QUICK, "--out", out)
        assert result.exit_code == 1 and not out.exists(), result.output


@pytest.mark.slow
def test_a_checkpoint_write_past_the_file_size_limit_names_the_file(cache, tmp_path):
    out = tmp_path / "run"
    fit = command("fit", "--cache", cache, "--student", "small_cnn", "--epochs", "1", "--workers", "0", *QUICK)
    limited = ["bash", "-c", 'ulimit -f 16 && exec "$@"', "ulimit", *fit, "--out", str(out)]
    done = subprocess.run(limited, capture_output=True, text=True)
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert f"cannot write {out / 'last.pt'}" in line and "File too large" in line
