"""Real torchrun processes (gloo on CPU): a 2-rank build equals a 1-process build, and resumes."""

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from softlabels import store

pytestmark = pytest.mark.slow


def torchrun(args, cwd, nproc=2, env=None):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "softlabels",
        "build",
        *map(str, args),
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=environment)


def single(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "softlabels", "build", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def contents(path):
    with h5py.File(path, "r") as f:
        return list(f["keys"].asstr()[:]), f["labels"][:], f["logits"][:], dict(f.attrs)


@pytest.fixture
def args(image_folder, teacher_weights):
    # 18 samples: not a multiple of world size x batch size (2 x 4)
    return [
        "--dataset",
        f"imagefolder:{image_folder}",
        "--teacher",
        "small_cnn",
        "--weights",
        teacher_weights,
        "--batch-size",
        "4",
        "--block-rows",
        "4",
        "--workers",
        "0",
        "--dtype",
        "float32",
    ]


def test_two_ranks_equal_one_process(args, tmp_path):
    done = torchrun([*args, "--out", tmp_path / "two.h5"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("wrote") == 1  # rank 0 alone reports
    assert single([*args, "--out", tmp_path / "one.h5"], tmp_path).returncode == 0
    keys2, labels2, logits2, attrs2 = contents(tmp_path / "two.h5")
    keys1, labels1, logits1, attrs1 = contents(tmp_path / "one.h5")
    assert keys2 == keys1 and (labels2 == labels1).all()
    np.testing.assert_allclose(logits2, logits1, rtol=1e-5, atol=1e-6)
    assert attrs2["dataset"] == attrs1["dataset"] and "shard" not in attrs2
    store.verify(tmp_path / "two.h5")
    assert sorted(p.name for p in tmp_path.iterdir() if "two.h5" in p.name) == ["two.h5"]  # shards cleaned


FAILING_TEACHER = """
import os
from pathlib import Path
from softlabels.models.zoo import SmallCNN

FLAG = Path(__file__).with_name("fail-rank-1")

class FailsOnce(SmallCNN):
    calls = 0
    def forward(self, x):
        FailsOnce.calls += 1
        if os.environ.get("RANK") == "1" and FailsOnce.calls == 3 and FLAG.exists():
            FLAG.unlink()
            raise RuntimeError("node lost")
        return super().forward(x)

def make(num_classes):
    return FailsOnce(num_classes, in_channels=3, image_size=8)
"""


def test_a_dead_rank_resumes_and_world_size_changes_are_refused(args, tmp_path):
    (tmp_path / "failing.py").write_text(textwrap.dedent(FAILING_TEACHER))
    (tmp_path / "fail-rank-1").touch()
    teacher = args.index("--teacher") + 1  # the same weights, in a model that fails once on rank 1
    run_args = [*args[:teacher], f"{tmp_path / 'failing.py'}:make", *args[teacher + 1 :], "--out", tmp_path / "c.h5"]
    failed = torchrun(run_args, tmp_path)
    assert failed.returncode != 0 and not (tmp_path / "c.h5").exists()
    assert (tmp_path / "c.h5.shard-1-of-2.partial").exists()
    refused = single([*run_args, "--resume"], tmp_path)
    assert refused.returncode == 1 and "torchrun" in refused.stderr and "Traceback" not in refused.stderr
    resumed = torchrun([*run_args, "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert single([*run_args[:-2], "--out", tmp_path / "ref.h5"], tmp_path).returncode == 0
    np.testing.assert_allclose(contents(tmp_path / "c.h5")[2], contents(tmp_path / "ref.h5")[2], rtol=1e-5, atol=1e-6)
