"""The demo's steps: real console commands, chained through the files they write."""

import sys

import pytest

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


def real_subset(folder, train: int, test: int):
    """The first images of Debian's real Fashion-MNIST, in its own idx.gz files (a subset keeps it fast)."""
    import gzip

    from softlabels.data.builtin import fashion_mnist_debian_dir

    debian = fashion_mnist_debian_dir()
    if not (debian / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make demo-data installs it as root)")
    folder.mkdir()
    for split, count in (("train", train), ("t10k", test)):
        for kind, header, size in (("images", 16, 28 * 28), ("labels", 8, 1)):
            name = f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            data = gzip.decompress((debian / name).read_bytes())
            head = bytearray(data[:header])
            head[4:8] = count.to_bytes(4, "big")  # the item count of the subset
            (folder / name).write_bytes(gzip.compress(bytes(head) + data[header : header + count * size]))
    return folder


@pytest.mark.slow  # four console commands, each a fresh Python importing torch: about a minute alone
def test_the_demo_runs_on_real_fashion_mnist_and_prints_its_table(tmp_path, monkeypatch):
    """`make demo` end to end on (the first 600 images of) the real Fashion-MNIST: every step runs,
    the cache is the teacher's pass over the training split, the students learn, the table shows them."""
    import json

    from softlabels.store import read_info
    from trainer.demo import run_demo

    monkeypatch.setenv("SOFTLABELS_FASHION_MNIST_DIR", str(real_subset(tmp_path / "debian", 600, 200)))
    config = DemoConfig(
        out=str(tmp_path / "demo"),
        data_root=str(tmp_path / "data"),
        teacher_per_class=60,
        teacher_epochs=2,
        student_per_class=60,
        student_epochs=2,
        workers=0,
    )
    table = run_demo(config)
    summaries = {
        name: json.loads((tmp_path / "demo" / name / "summary.json").read_text())
        for name in ("teacher", "student-kd", "student-ce")
    }
    assert summaries["teacher"]["config"]["data"]["subset"] == 60 and summaries["student-kd"]["loss"] == "kd"
    assert read_info(tmp_path / "demo" / "cache.h5").layout.num_samples == 600  # the whole training split
    for name, summary in summaries.items():
        assert f"{summary['test_accuracy']:.2%}" in table, name
        assert summary["test_accuracy"] > 0.3, name  # 10 classes: chance is 10%
    assert (tmp_path / "demo" / "results.txt").read_text().strip() == table
