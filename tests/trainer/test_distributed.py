"""DDP under real torchrun processes (gloo on CPU): one output folder, rank 0 writes, resume works."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow


def torchrun_fit(args, cwd, nproc=2):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "trainer", "fit", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_ddp_fit_from_a_multiview_cache_and_resume(multiview_cache, tmp_path):
    out = tmp_path / "ddp"
    args = ["--cache", multiview_cache, "--student", "small_cnn", "--batch-size", "4", "--workers", "0",
            "--epochs", "3", "--no-progress", "--out", out]
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
