"""`--probe`: the student's features scored on the labelled evaluation set, equal to an independent
computation from the saved weights; refused without an evaluation set. `--probe-teacher`: the teacher's
stored embeddings of the same set scored by the same probes, and the neighbour overlap."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from softlabels import open_cache
from softlabels.build import BuildConfig, build_cache
from softlabels.data import open_dataset
from softlabels.models.preprocessing import Preprocessing
from softlabels.probes import neighbour_overlap, probe_accuracy
from softlabels.views import Normalize
from trainer import FitConfig, fit
from trainer.checkpoints import load_checkpoint
from trainer.data import LabelledDataset
from trainer.students import create_student


def test_probes_match_an_independent_computation(cache, image_folder, fit_options, tmp_path):
    summary = fit(FitConfig.from_options(cache=cache, probe=("knn", "linear"), **fit_options))
    assert set(summary) >= {"probe_knn", "probe_linear"}
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["probe_knn"] == summary["probe_knn"] and last["probe_linear"] == summary["probe_linear"]

    state = load_checkpoint(tmp_path / "run" / "last.pt")
    prep = Preprocessing.from_dict(state["preprocessing"])
    student = create_student("small_cnn", 3, 3, 8)
    student.load_state_dict(state["model"])
    student.eval()
    captured = []
    student.classifier.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    held_out = LabelledDataset(open_dataset(f"imagefolder:{image_folder}", "test"), prep)
    images = torch.stack([held_out[i][0] for i in range(len(held_out))])
    labels = np.array([held_out[i][1] for i in range(len(held_out))])
    with torch.no_grad():
        student(Normalize(prep)(images))
    expected = probe_accuracy(captured[0].numpy(), labels, ("knn", "linear"), 3)
    assert summary["probe_knn"] == pytest.approx(expected["probe_knn"])
    assert summary["probe_linear"] == pytest.approx(expected["probe_linear"])
    assert isinstance(student.classifier, nn.Linear)


def test_probes_need_an_evaluation_set(cache, fit_options):
    config = FitConfig.from_options(cache=cache, probe=("knn",), eval_dataset="none", **fit_options)
    with pytest.raises(ValueError, match="--probe knn scores the student's features on a labelled evaluation set"):
        fit(config)


def test_probe_teacher_scores_the_stored_embeddings_alike(build_options, fit_options, tmp_path):
    options = {**build_options, "targets": "embedding", "split": "test", "out": str(tmp_path / "test.h5")}
    held_out = str(build_cache(BuildConfig.from_options(**options)).path)
    train = str(
        build_cache(BuildConfig.from_options(**{**options, "split": "train", "out": str(tmp_path / "t.h5")})).path
    )
    config = FitConfig.from_options(
        cache=train, loss="embed-cosine", probe=("knn", "linear"), probe_teacher=held_out, **fit_options
    )
    summary = fit(config)
    with open_cache(held_out) as cache:
        teacher = cache.embeddings(list(range(len(cache))))
        expected = probe_accuracy(teacher, cache.labels, ("knn", "linear"), 3)
    assert summary["probe_teacher_knn"] == expected["probe_knn"]
    assert summary["probe_teacher_linear"] == expected["probe_linear"]
    assert 0 <= summary["probe_nn_overlap"] <= 1
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["probe_nn_overlap"] == summary["probe_nn_overlap"]
    assert neighbour_overlap(teacher, teacher) == 1.0


def test_probe_teacher_refuses_other_samples_and_no_probe(build_options, cache, fit_options, tmp_path):
    train = str(
        build_cache(
            BuildConfig.from_options(**{**build_options, "targets": "embedding", "out": str(tmp_path / "e.h5")})
        ).path
    )
    with pytest.raises(ValueError, match="--probe-teacher: .* was not built from"):
        fit(FitConfig.from_options(cache=cache, probe=("knn",), probe_teacher=train, **fit_options))
    with pytest.raises(ValueError, match="add --probe"):
        fit(FitConfig.from_options(cache=cache, probe_teacher=train, **fit_options))
    with pytest.raises(ValueError, match="stores no embeddings"):
        fit(FitConfig.from_options(cache=cache, probe=("knn",), probe_teacher=cache, **fit_options))
