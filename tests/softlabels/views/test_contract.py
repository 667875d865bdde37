"""The `Augment` contract is complete: an augmentation that needs a second sample (MixUp, CutMix, or one
of a user's) is an `Augment` like the others, and the pipeline has no special case for it."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from softlabels.build import TeacherInputs
from softlabels.data import open_dataset
from softlabels.models.preprocessing import Preprocessing
from softlabels.views import AUGMENTS, Augment, Mixed, ViewPipeline, fit_size, parse_augment, pipeline, to_tensor

PREP = Preprocessing((0.5,) * 3, (0.25,) * 3, 8, pixels="uint8")


class Pair(Augment):
    """The mean of a sample and a partner, written against the contract alone (draw / view)."""

    name = "pair"
    param_names = ("partner",)
    mixes = True

    def draw(self, rng, x, maker):
        return self.encode([rng.integers(0, maker.partners)])

    def view(self, x, row, maker):
        (partner,) = self._unpack(row)
        plain = AUGMENTS["none"]
        return (plain.view(x, (), maker) + plain.view(maker.partner(partner), (), maker)) / 2


def test_an_augmentation_with_a_partner_needs_nothing_but_the_contract(image_folder):
    source = open_dataset(f"imagefolder:{image_folder}")
    views = ViewPipeline(PREP, Pair(), source)
    x = views.decode(source.load(3))
    params = views.stored_params(x, 0, source.keys[3], 4)
    assert params.shape == (4, 1) and ((0 <= params) & (params < len(source))).all()
    np.testing.assert_array_equal(params, views.stored_params(x, 0, source.keys[3], 4))  # (seed, key) alone
    for row in params:
        own, theirs = (fit_size(to_tensor(source.load(i), 3), 8) for i in (3, int(row[0])))
        assert torch.equal(views.view(x, row), (own + theirs) / 2)
    _, built, stored, _ = TeacherInputs(source, views, 4, 0)[3]  # the teacher pass takes the same path
    np.testing.assert_array_equal(stored.numpy(), params)
    assert torch.equal(built, views.views(x, params))
    with pytest.raises(ValueError, match="no label to learn"):
        views.random_view(x, np.random.default_rng(0))


@pytest.mark.parametrize("spec", ["cifar+mixup", "imagenet+cutmix:0.5"])
def test_mixed_views_go_through_the_augmentations_draw_and_view(spec, image_folder, monkeypatch):
    source = open_dataset(f"imagefolder:{image_folder}")
    mixed = parse_augment(spec)
    assert isinstance(mixed, Mixed) and isinstance(mixed, Augment)
    views = ViewPipeline(PREP, mixed, source)
    calls = []
    for hook in ("draw", "view"):
        original = getattr(Mixed, hook)
        monkeypatch.setattr(Mixed, hook, lambda self, *a, _o=original, _h=hook: calls.append(_h) or _o(self, *a))
    x = views.decode(source.load(0))
    params = views.stored_params(x, 1, source.keys[0], 2)
    views.views(x, params)
    assert calls == ["draw", "draw", "view", "view"]


def test_the_pipeline_names_no_kind_of_augmentation():
    tree = ast.parse(Path(pipeline.__file__).read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not names & {"Mixed", "base", "split", "mix", "UserAugment", "SeededPipeline"}
    assert not modules & {"softlabels.views.mixed", "softlabels.views.user"}


PAIR = """
from softlabels.views import AUGMENTS, Augment


class Pair(Augment):
    param_names = ("partner",)
    mixes = True

    def draw(self, rng, x, maker):
        return self.encode([rng.integers(0, maker.partners)])

    def view(self, x, row, maker):
        plain = AUGMENTS["none"]
        return (plain.view(x, (), maker) + plain.view(maker.partner(int(row[0])), (), maker)) / 2
"""


def test_a_users_augmentation_may_use_the_partner_hook(image_folder, tmp_path):
    (tmp_path / "pair.py").write_text(PAIR)
    users = parse_augment(f"{tmp_path / 'pair.py'}:Pair")
    assert users.mixes and users.param_names == ("partner",)
    source = open_dataset(f"imagefolder:{image_folder}")
    theirs, ours = ViewPipeline(PREP, users, source), ViewPipeline(PREP, Pair(), source)
    x = ours.decode(source.load(5))
    params = theirs.stored_params(x, 2, source.keys[5], 3)
    np.testing.assert_array_equal(params, ours.stored_params(x, 2, source.keys[5], 3))
    assert torch.equal(theirs.views(x, params), ours.views(x, params))
