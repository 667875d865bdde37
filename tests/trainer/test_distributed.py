"""torchrun (gloo on CPU): two processes with half the batch each train the same model as one process;
rank 0 alone writes; stop and resume work under DDP."""

import json
import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_two_ranks_match_one_process(cache, tmp_path):
    common = [
        "fit",
        "--cache",
        cache,
        "--student",
        "small_cnn",
        "--epochs",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "trainer", *common, "--batch-size", "6", "--out", tmp_path / "one"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "trainer",
            *common,
            "--batch-size",
            "3",
            "--out",
            tmp_path / "two",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test accuracy") == 1  # only rank 0 reports
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def torchrun_fit(args, cwd, nproc=2):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "trainer",
        "fit",
        *map(str, args),
    ]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


@pytest.mark.slow
def test_ddp_fit_from_a_multiview_cache_and_resume(multiview_cache, tmp_path):
    out = tmp_path / "ddp"
    args = [
        "--cache",
        multiview_cache,
        "--student",
        "small_cnn",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--epochs",
        "3",
        "--no-progress",
        "--out",
        out,
    ]
    first = torchrun_fit([*args, "--stop-after", "2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]  # rank 0 alone logs: no duplicate lines
    resumed = torchrun_fit([*args, "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 3 and summary["finished"]
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    state = torch.load(out / "last.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in state["model"])  # loadable without DDP
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tmp") == []
    whole = tmp_path / "whole"  # the same DDP run, never stopped: the resumed one must equal it
    uninterrupted = torchrun_fit([*args[:-1], whole], tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    reference = torch.load(whole / "last.pt", weights_only=True)["model"]
    assert reference.keys() == state["model"].keys()
    assert all(torch.equal(state["model"][k], reference[k]) for k in reference)


SLOW_STUDENT = """
import os, time
from softlabels.models.zoo import SmallCNN

class Slow(SmallCNN):
    def forward(self, x):
        if self.training:
            time.sleep(float(os.environ.get("STEP_DELAY", 0)))
        return super().forward(x)

def make(num_classes, in_channels=3, image_size=8):
    return Slow(num_classes, in_channels=in_channels, image_size=image_size)
"""


@pytest.mark.slow
@pytest.mark.parametrize("target", ["one rank", "the launcher"])
def test_a_stop_signal_stops_every_rank_after_the_same_step_and_resumes(multiview_cache, tmp_path, target):
    """SIGUSR1 to one rank alone: it tells the others at the next step. SIGTERM to torchrun (what SLURM
    sends the task it launched): torchrun passes SIGTERM to its workers. Either way every rank stops after
    the same step, rank 0 saves it and says so in summary.json (torchrun reports its own exit status, not
    the workers' 75), and --resume under torchrun finishes the run."""
    import signal
    import time

    (tmp_path / "slow.py").write_text(SLOW_STUDENT)
    out = tmp_path / "ddp"
    args = ["--cache", multiview_cache, "--student", f"{tmp_path / 'slow.py'}:make", "--batch-size", "2"]
    args += ["--workers", "0", "--epochs", "3", "--no-progress", "--eval-dataset", "none", "--out", out]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "trainer"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STEP_DELAY": "0.2"}
    launcher = subprocess.Popen(
        [*command, "fit", *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    while not (out / "summary.json").exists():  # epoch 1 is done and written
        assert launcher.poll() is None, launcher.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)  # into epoch 2 (4 steps of 0.2 s)
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    signum = signal.SIGUSR1 if target == "one rank" else signal.SIGTERM
    os.kill(int(max(workers, key=int)) if target == "one rank" else launcher.pid, signum)
    _, err = launcher.communicate(timeout=180)
    assert launcher.returncode != 0
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and 1 <= saved["step"] < 4, "the signal did not land mid-epoch"
    stops = [line for line in err.splitlines() if line.startswith("error: stopped by")]
    assert len(stops) == 2 and all(f"{signum.name} at epoch 2, step {saved['step']} of 4" in line for line in stops)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == signum.name and summary["step"] == saved["step"] and not summary["finished"]
    resumed = subprocess.run([*command, "fit", *map(str, args), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and "stopped_by" not in summary
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").open()] == [1, 2, 3]


@pytest.mark.slow
def test_a_shared_stream_sweep_under_torchrun_equals_each_run_alone_under_torchrun(cache, tmp_path):
    """Each rank feeds its shard to every student (each its own DDP wrapper): the same weights as the
    run trained alone with the same two processes."""
    common = ["--cache", cache, "--epochs", "2", "--batch-size", "3", "--workers", "0", "--device", "cpu"]
    sweep = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "trainer"]
    sweep += ["sweep", *common, "--no-progress", "--student", "linear", "--student", "small_cnn"]
    sweep += ["--temperature", "1", "--temperature", "4", "--out", str(tmp_path / "sweep")]
    done = subprocess.run(
        sweep, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr
    runs = sorted(path for path in (tmp_path / "sweep").iterdir() if path.is_dir())
    assert len(runs) == 4
    for run in runs[::3]:  # one run of each student
        student = run.name.split("-", 1)[0]
        temperature = run.name.split("-T", 1)[1].split("-", 1)[0]
        alone = torchrun_fit(
            [*common, "--student", student, "--temperature", temperature, "--out", tmp_path / run.name], tmp_path
        )
        assert alone.returncode == 0, alone.stderr
        a = torch.load(run / "last.pt", weights_only=True)["model"]
        b = torch.load(tmp_path / run.name / "last.pt", weights_only=True)["model"]
        assert all(torch.equal(a[key], b[key]) for key in a)
