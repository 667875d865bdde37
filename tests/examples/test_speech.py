"""The speech example end to end on a small slice: espeak-ng clips -> CNN teacher -> cache -> student."""

import shutil
import wave

import pytest
import torch

from examples.speech import make_data
from examples.speech.__main__ import SpeechConfig, steps
from softlabels import store
from softlabels.data import open_dataset

from .conftest import summary, teacher_reproduces

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng; `make install`)"
)


def test_spoken_digits_teacher_cache_student(tmp_path, run_steps):
    config = SpeechConfig(
        root=str(tmp_path / "data"),
        out=str(tmp_path / "out"),
        train_per_word=3,
        test_per_word=1,
        teacher_epochs=1,
        student_epochs=1,
    )
    run_steps(steps(config))
    out = tmp_path / "out"
    for run in ("teacher", "student-kd", "student-ce"):
        assert 0 <= summary(out, run)["test_accuracy"] <= 1
    assert summary(out, "student-kd")["loss"] == "kd" and summary(out, "student-ce")["loss"] == "ce"
    info = store.read_info(out / "cache.h5")
    assert info.layout.num_samples == 30 and info.input.sample == "tensor"
    source = open_dataset(steps(config)["teacher"][5], root=config.root)
    assert source.keys[7] == "seven/train-00007.wav" and source.classes[7] == "seven"
    sample = source.load(7)
    assert sample.shape == (40, 101) and sample.dtype == torch.float32  # log-mel, not an image
    assert info.fingerprint == store.dataset_fingerprint(source.keys, source.labels)
    teacher_reproduces(out, config.root, samples=30)  # the cache holds this teacher's outputs


def test_clips_are_deterministic_and_test_speakers_are_held_out(tmp_path):
    make_data.make_digits(tmp_path / "a", train_per_word=2, test_per_word=1)
    make_data.make_digits(tmp_path / "b", train_per_word=1, test_per_word=1)  # a prefix of the same clips
    first = tmp_path / "a" / "spoken-digits" / "train" / "three" / "train-00003.wav"
    assert first.read_bytes() == (tmp_path / "b" / first.relative_to(tmp_path / "a")).read_bytes()
    with wave.open(str(first)) as clip:
        assert (clip.getframerate(), clip.getnframes(), clip.getnchannels()) == (22050, 22050, 1)
    plans = [make_data.clip_plan("test", i, 0) for i in range(200)]
    assert {p["variant"] for p in plans} <= set(make_data.TEST_VARIANTS)
    assert not set(make_data.TEST_VARIANTS) & set(make_data.TRAIN_VARIANTS)
