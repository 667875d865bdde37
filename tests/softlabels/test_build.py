"""The teacher pass: what lands in the cache, determinism, resume, sharding and its errors."""

import textwrap

import h5py
import numpy as np
import pytest
import torch

from softlabels import store
from softlabels.build import BuildConfig, BuildInterrupted, build_cache
from softlabels.build.shards import merge_caches
from softlabels.data import open_dataset
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.teachers import load_teacher
from softlabels.views import to_tensor


def logits_of(path):
    with h5py.File(path, "r") as f:
        return f["logits"][:]


def test_cache_holds_the_teachers_logits(build_options, image_folder, teacher_weights):
    result = build_cache(BuildConfig.from_options(**build_options))
    source = open_dataset(f"imagefolder:{image_folder}")
    teacher = load_teacher("small_cnn", weights=str(teacher_weights), num_classes=3, image_size=8)
    prep = Preprocessing(**{k: source.defaults[k] for k in ("mean", "std", "image_size")})
    images = torch.stack(
        [
            (to_tensor(source.load(i), 3) - torch.tensor(prep.mean).view(3, 1, 1))
            / torch.tensor(prep.std).view(3, 1, 1)
            for i in range(len(source))
        ]
    )
    with torch.inference_mode():
        expected = teacher.model.eval()(images)
    with h5py.File(result.path, "r") as f:
        assert list(f["keys"].asstr()[:]) == source.keys
        assert f["keys"].asstr()[0] == "cat/0000.png"
        np.testing.assert_array_equal(f["labels"][:], source.labels)
        np.testing.assert_allclose(f["logits"][:, 0], expected.numpy(), rtol=1e-4, atol=1e-5)
        assert f.attrs["teacher_accuracy"] == pytest.approx(float((expected.argmax(1).numpy() == source.labels).mean()))
    info = store.read_info(result.path)
    assert info.teacher.weights_sha256 and info.teacher.num_params > 0
    assert list(info.dataset.classes) == ["cat", "dog", "frog"]
    assert info.preprocessing.image_size == 8
    store.verify(result.path)


def test_same_file_whatever_batch_size_and_workers(build_options, tmp_path):
    first = build_cache(BuildConfig.from_options(**build_options)).path
    second = build_cache(
        BuildConfig.from_options(**{**build_options, "batch_size": 5, "workers": 2, "out": str(tmp_path / "again.h5")})
    ).path
    np.testing.assert_allclose(logits_of(first), logits_of(second), rtol=1e-5, atol=1e-6)


def test_user_model_file_equals_zoo_name(build_options, tmp_path):
    model_file = tmp_path / "mymodel.py"
    model_file.write_text(
        textwrap.dedent("""
        from softlabels.models.zoo import SmallCNN
        def make(num_classes):
            return SmallCNN(num_classes, in_channels=3, image_size=8)
    """)
    )
    zoo = build_cache(BuildConfig.from_options(**build_options)).path
    own = build_cache(
        BuildConfig.from_options(**{**build_options, "teacher": f"{model_file}:make", "out": str(tmp_path / "own.h5")})
    ).path
    np.testing.assert_array_equal(logits_of(zoo), logits_of(own))


def test_existing_outputs_are_not_overwritten(build_options):
    build_cache(BuildConfig.from_options(**build_options))
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_cache(BuildConfig.from_options(**build_options))
    build_cache(BuildConfig.from_options(**build_options, overwrite=True))


INTERRUPTING_TEACHER = """
import os, signal
from pathlib import Path
from softlabels.models.zoo import SmallCNN

FLAG = Path(__file__).with_name("interrupt-once")

class Interrupting(SmallCNN):
    calls = 0
    def forward(self, x):
        Interrupting.calls += 1
        if Interrupting.calls == {after} and FLAG.exists():
            FLAG.unlink()
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C in the middle of the pass
        return super().forward(x)

def make(num_classes):
    return Interrupting(num_classes, in_channels=3, image_size=8)
"""


def interrupting_options(build_options, tmp_path, after):
    model_file = tmp_path / "interrupting.py"
    model_file.write_text(INTERRUPTING_TEACHER.format(after=after))
    (tmp_path / "interrupt-once").touch()
    return {**build_options, "teacher": f"{model_file}:make", "block_rows": 4}


def test_ctrl_c_leaves_a_partial_that_resumes_identically(build_options, tmp_path):
    options = interrupting_options(build_options, tmp_path, after=4)  # probe + 3 batches of 4 rows
    with pytest.raises(BuildInterrupted, match="--resume"):
        build_cache(BuildConfig.from_options(**options))
    partial = store.partial_path(build_options["out"])
    assert partial.exists() and not (tmp_path / "cache.h5").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        build_cache(BuildConfig.from_options(**options))
    result = build_cache(BuildConfig.from_options(**options, resume=True))
    assert result.resumed_from == 8
    reference = build_cache(BuildConfig.from_options(**{**options, "out": str(tmp_path / "ref.h5")})).path
    np.testing.assert_array_equal(logits_of(result.path), logits_of(reference))


def test_resume_refuses_other_settings(build_options, tmp_path):
    options = interrupting_options(build_options, tmp_path, after=3)
    with pytest.raises(BuildInterrupted):
        build_cache(BuildConfig.from_options(**options))
    with pytest.raises(ValueError, match="other settings.*preprocessing"):
        build_cache(BuildConfig.from_options(**options, resume=True, mean=(0.5, 0.5, 0.5)))


NAN_TEACHER = """
import torch
from softlabels.models.zoo import SmallCNN

class Broken(SmallCNN):
    def forward(self, x):
        out = super().forward(x)
        if len(x) > 2:                       # not the shape probe
            out[1, 0] = float("nan")
        return out

def make(num_classes):
    return Broken(num_classes, in_channels=3, image_size=8)
"""


def test_nan_teacher_is_refused_naming_keys(build_options, tmp_path):
    model_file = tmp_path / "broken.py"
    model_file.write_text(NAN_TEACHER)
    with pytest.raises(ValueError, match="NaN/inf logits.*cat/0001.png"):
        build_cache(BuildConfig.from_options(**{**build_options, "teacher": f"{model_file}:make"}))
    assert not (tmp_path / "cache.h5").exists()


def test_class_count_mismatch(build_options):
    with pytest.raises(ValueError, match="outputs 10 classes but .* has 3"):
        build_cache(BuildConfig.from_options(**{**build_options, "weights": None, "num_classes": 10}))


def test_views_need_augmentation(build_options):
    with pytest.raises(ValueError, match="--views > 1 needs an augmentation"):
        build_cache(BuildConfig.from_options(**build_options, views=2))


def test_shards_merge_into_the_single_process_cache(build_options, tmp_path):
    single = build_cache(BuildConfig.from_options(**build_options)).path
    shards = []
    for index in range(3):
        out = tmp_path / f"part{index}.h5"
        build_cache(BuildConfig.from_options(**{**build_options, "out": str(out), "shard": (index, 3)}))
        shards.append(out)
    merged = merge_caches(shards[::-1], tmp_path / "merged.h5", progress=False)
    store.verify(merged)
    np.testing.assert_array_equal(logits_of(merged), logits_of(single))
    assert store.read_keys_labels(merged)[0] == store.read_keys_labels(single)[0]
    with pytest.raises(ValueError, match="missing shards"):
        merge_caches(shards[:2], tmp_path / "bad.h5", progress=False)
    with pytest.raises(ValueError, match="overlap"):
        merge_caches([shards[0], shards[0], *shards[1:]], tmp_path / "bad.h5", progress=False)
