"""The demo's steps: real console commands, chained through the files they write."""

import sys

from trainer.demo import DemoConfig, commands, needs_download


def test_steps_chain_teacher_cache_and_students(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLABELS_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    (tmp_path / "debian").mkdir()
    (tmp_path / "debian" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    steps = commands(DemoConfig(out=str(tmp_path / "demo"), data_root=str(tmp_path / "data")))
    assert list(steps) == ["teacher", "cache", "student-kd", "student-ce"]
    assert all(
        argv[:3] in ([sys.executable, "-m", "trainer"], [sys.executable, "-m", "softlabels"]) for argv in steps.values()
    )
    teacher_weights = str(tmp_path / "demo" / "teacher" / "best.pt")
    assert steps["cache"][steps["cache"].index("--weights") + 1] == teacher_weights
    assert steps["student-kd"][steps["student-kd"].index("--cache") + 1] == str(tmp_path / "demo" / "cache.h5")
    assert "--teacher" not in steps["student-kd"]  # the student never loads the teacher
    assert not any("--download" in argv for argv in steps.values())


def test_download_only_without_local_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLABELS_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    assert needs_download(str(tmp_path / "data"))
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"")
    assert not needs_download(str(tmp_path / "data"))
