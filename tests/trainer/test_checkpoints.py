"""Atomic run files and safe, checked checkpoints."""

import pytest
import torch

from trainer.checkpoints import check_resumable, load_checkpoint, resume_differences, save_checkpoint, write_json_atomic
from trainer.config import FitConfig


def test_checkpoints_load_with_weights_only(tmp_path):
    state = {
        "model": {"w": torch.ones(2)},
        "config": {"student": "mlp", "mean": [0.5]},
        "rng": {"torch": torch.get_rng_state()},
    }
    path = save_checkpoint(state, tmp_path / "last.pt")
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["model"]["w"], torch.ones(2)) and loaded["config"]["student"] == "mlp"
    assert load_checkpoint(path)["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_unreadable_checkpoints_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        load_checkpoint(tmp_path / "last.pt")
    (tmp_path / "bad.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable trainer checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def test_atomic_write_replaces_whole_files(tmp_path):
    write_json_atomic({"a": 1}, tmp_path / "summary.json")
    write_json_atomic({"a": 2}, tmp_path / "summary.json")
    assert (tmp_path / "summary.json").read_text().strip().endswith("}")
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_run_only_settings_may_change_on_resume():
    saved = FitConfig.from_options(student="mlp", workers=0, device="cpu", epochs=4, out="a")
    moved = saved.replace(workers=4, device="cuda", out="b", cache_memory_mb=0, threads=2)
    assert resume_differences(saved.identity(), moved.identity()) == []
    assert resume_differences(saved.identity(), saved.replace(epochs=8).identity()) == [
        "optim.epochs: checkpoint has 4, this run 8"
    ]
    with pytest.raises(ValueError, match="dataset_fingerprint"):
        check_resumable(
            {"config": saved.to_dict(), "identity": {"dataset_fingerprint": "x"}},
            saved.identity(),
            {"dataset_fingerprint": "y"},
            "last.pt",
        )
    with pytest.raises(ValueError, match="model.student: checkpoint has 'mlp', this run 'linear'"):
        check_resumable({"config": saved.to_dict()}, saved.replace(student="linear").identity(), {}, "last.pt")


def test_every_option_belongs_to_exactly_one_group():
    from dataclasses import fields

    names = [f.name for group in FitConfig._groups().values() for f in fields(group)]
    assert len(names) == len(set(names))
    with pytest.raises(TypeError, match="unknown option 'epoch'"):
        FitConfig.from_options(student="mlp", out="a", epoch=3)
