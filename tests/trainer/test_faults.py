"""Training-side faults, really done: kill -9 and resume, concurrent readers, a read-only cache folder."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.slow


def fit_command(cache, out, *extra):
    return [
        sys.executable,
        "-m",
        "trainer",
        "fit",
        "--cache",
        str(cache),
        "--student",
        "small_cnn",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
        *extra,
    ]


def finished_epochs(out) -> int:
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(multiview_cache, tmp_path):
    args = ("--epochs", "6", "--eval-dataset", "none")
    reference = subprocess.run(fit_command(multiview_cache, tmp_path / "ref", *args), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    victim = subprocess.Popen(
        fit_command(multiview_cache, tmp_path / "run", *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while finished_epochs(tmp_path / "run") < 2 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert 2 <= finished_epochs(tmp_path / "run") < 6, "the run was not killed mid-way"
    resumed = subprocess.run(
        fit_command(multiview_cache, tmp_path / "run", *args, "--resume"), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    ours = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    theirs = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["model"]
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)
    assert [
        json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ] == list(range(1, 7))


def test_two_trainers_read_one_cache_at_once(cache, tmp_path):
    lazy = ("--epochs", "2", "--cache-memory-mb", "0")  # both read rows through their own HDF5 handles
    runs = [
        subprocess.Popen(
            fit_command(cache, tmp_path / f"run{i}", *lazy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    first, second = (json.loads((tmp_path / f"run{i}" / "summary.json").read_text()) for i in range(2))
    assert first["test_accuracy"] == second["test_accuracy"]  # same seed, same data: same result


@pytest.fixture
def read_only_copy(cache, tmp_path):
    """The cache's folder bind-mounted read-only (root can write through chmod, not through this)."""
    mount = tmp_path / "readonly"
    mount.mkdir()
    source = os.path.dirname(cache)
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", source, str(mount)], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        yield mount / os.path.basename(cache)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_read_only_cache_folder_works(read_only_copy, tmp_path):
    with pytest.raises(OSError):
        (read_only_copy.parent / "probe").write_text("x")
    verify = subprocess.run(
        [sys.executable, "-m", "softlabels", "verify", str(read_only_copy)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stderr
    run = subprocess.run(
        fit_command(read_only_copy, tmp_path / "run", "--epochs", "1", "--cache-memory-mb", "0"),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
