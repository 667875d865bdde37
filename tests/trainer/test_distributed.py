"""torchrun: two CPU processes with half the batch each train the same model as one process."""
import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_two_ranks_match_one_process(cache, tmp_path):
    common = ["fit", "--cache", cache, "--student", "small_cnn", "--epochs", "2", "--workers", "0", "--device", "cpu",
              "--no-progress"]
    one = subprocess.run([sys.executable, "-m", "trainer", *common, "--batch-size", "6", "--out", tmp_path / "one"],
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "trainer", *common, "--batch-size", "3", "--out", tmp_path / "two"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("test accuracy") == 1  # only rank 0 reports
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
