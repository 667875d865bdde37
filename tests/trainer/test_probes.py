"""`--probe`: the student's features scored on the labelled evaluation set, equal to an independent
computation from the saved weights; refused without an evaluation set."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from softlabels.data import open_dataset
from softlabels.models.preprocessing import Preprocessing
from softlabels.probes import probe_accuracy
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
