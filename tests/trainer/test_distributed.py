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
