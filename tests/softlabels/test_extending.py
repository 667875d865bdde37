"""A new storage mode or model source is one class registered once: the build, the reader, `verify`,
the trainer and the Python API then handle it with no other edit (the worked examples of
docs/ARCHITECTURE.md, "Where new things go"). The classes below are what their own module would hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import softlabels
from softlabels.build import BuildConfig, build_cache
from softlabels.models import registry
from softlabels.models.base import ModelSource
from softlabels.store import modes
from softlabels.store.modes.base import StorageMode, check_finite

CENTRED = "centred/logits"


class Centred(StorageMode):
    """Every logit minus the view's largest, float16: the same softmax at every temperature, and the
    largest stored value is always 0 (what a team might store to keep float16 far from overflow)."""

    name = "centred"
    description = "every logit minus the view's largest"

    def datasets(self, rows):
        return {CENTRED: ((*rows, self.num_classes), np.dtype("float16"))}

    def encode(self, logits):
        logits = logits.float()
        check_finite(logits)
        return {CENTRED: (logits - logits.amax(-1, keepdim=True)).half().cpu().numpy()}

    def dense(self, arrays):
        return arrays[CENTRED].astype(np.float32)

    def top1(self, arrays):
        return arrays[CENTRED].argmax(axis=-1)

    def differences(self, arrays, fresh):
        return np.abs(self.dense(arrays) - (fresh - fresh.max(-1, keepdims=True))).max(axis=-1)

    def export(self, arrays):
        return {"logits": self.dense(arrays)}

    def label(self, short=False):
        return "centred" if short else "logits minus the largest, float16"


class Means(nn.Module):
    """Logits from the mean colour of the image: a teacher a colour-biased dataset can learn from."""

    def __init__(self, num_classes: int, in_channels: int):
        super().__init__()
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.head(x.mean(dim=(2, 3)))


class MeansSource(ModelSource):
    """`means:` specs: the colour-mean model above."""

    name = "means"
    form = "means:"

    def claims(self, spec: str) -> bool:
        return spec == "means:"

    def create(self, spec, num_classes, in_channels, image_size):
        return Means(num_classes, in_channels)


@pytest.fixture
def centred(monkeypatch):
    monkeypatch.setitem(modes.MODES, Centred.name, Centred)  # its registration line
    return Centred.name


@pytest.fixture
def means(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "SOURCES", (MeansSource(), *registry.SOURCES))  # its registration line
    torch.manual_seed(0)
    weights = tmp_path / "means.pt"
    torch.save(Means(3, 3).state_dict(), weights)
    return "means:", weights


def test_a_new_storage_mode_builds_verifies_and_trains(centred, build_options, dense, tmp_path):
    full = build_cache(BuildConfig.from_options(**{**build_options, "out": str(tmp_path / "full.h5")})).path
    mine = build_cache(BuildConfig.from_options(**{**build_options, "storage": centred})).path
    softlabels.verify(mine)
    stored, reference = dense(mine), dense(full)
    assert stored.max(axis=-1).max() == 0.0
    np.testing.assert_allclose(stored, reference - reference.max(-1, keepdims=True), atol=2e-2)
    cache = softlabels.open_cache(mine)
    assert np.argmax(cache.targets(0)) == np.argmax(reference[0, 0])

    from trainer import FitConfig, fit

    summary = fit(
        FitConfig.from_options(cache=str(mine), student="linear", epochs=1, workers=0, out=str(tmp_path / "r"))
    )
    assert summary["finished"] and np.isfinite(summary["train_loss"])


def test_a_new_model_source_is_a_teacher(means, build_options, image_folder):
    spec, weights = means
    path = build_cache(BuildConfig.from_options(**{**build_options, "teacher": spec, "weights": str(weights)})).path
    info = softlabels.read_info(path)
    assert info.teacher.spec == spec and info.teacher.model_class == "Means"
    model = Means(3, 3)
    model.load_state_dict(torch.load(weights))
    source = softlabels.open_dataset(f"imagefolder:{image_folder}")
    x, _, logits = softlabels.open_cache(path).replay(source, 0, normalize=True)
    np.testing.assert_allclose(model(x[None]).detach().numpy()[0], logits, atol=1e-5)
