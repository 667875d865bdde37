"""The tabular example end to end: scikit-learn's digits, three MLP teachers in one cache, linear and
scikit-learn students from the ensemble's soft targets."""

import pytest
import torch

from examples.tabular.__main__ import STUDENTS, TabularConfig, run_name, steps
from softlabels import store
from softlabels.data import open_dataset

from .conftest import summary

pytest.importorskip("sklearn", reason="the tabular example reads scikit-learn's table: pip install -e '.[sklearn]'")


def test_digits_ensemble_cache_and_classic_students(tmp_path, run_steps):
    config = TabularConfig(out=str(tmp_path / "out"), teachers=2, teacher_epochs=3, student_epochs=3)
    plan = steps(config)
    assert list(plan)[:3] == ["teacher-0", "teacher-1", "cache"]
    run_steps(plan)
    out = tmp_path / "out"
    info = store.read_info(out / "cache.h5")
    assert info.layout.num_samples == 1257 and len(info.member_names) == 2
    for student in STUDENTS:
        kd, ce = summary(out, run_name(student, "kd")), summary(out, run_name(student, "ce"))
        assert kd["loss"] == "kd" and ce["loss"] == "ce"
        assert kd["test_accuracy"] > 0.8 and ce["test_accuracy"] > 0.8, (student, kd, ce)


def test_features_are_float32_vectors_with_stable_keys():
    train = open_dataset(steps(TabularConfig())["teacher-0"][5])
    test = open_dataset(steps(TabularConfig())["teacher-0"][5], split="test")
    assert (len(train), len(test)) == (1257, 540) and not set(train.keys) & set(test.keys)
    sample = train.load(0)
    assert sample.shape == (64,) and sample.dtype == torch.float32 and 0 <= sample.min() <= sample.max() <= 1
