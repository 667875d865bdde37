"""Mixed views (issue 12, stretch): MixUp and CutMix cached with their partner and lambda, replayed
exactly, and trained on with the teacher's targets alone."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import softlabels
from softlabels import store
from softlabels.audit import recompute
from softlabels.cli import main
from softlabels.data import open_dataset
from softlabels.models.teachers import load_teacher
from softlabels.replay import ReplayDataset
from softlabels.views import Mixed, Normalize, ViewPipeline, parse_augment, recorded_augment
from tests.trainer.witness import Witness
from trainer.config import FitConfig
from trainer.loop import fit


@pytest.fixture(params=["cifar+mixup", "flip+cutmix:0.5"])
def mixed_cache(request, make_cache):
    return make_cache("mixed.h5", views=3, augment=request.param, seed=3), request.param


def test_names_parse_to_canonical_mixes_and_bad_ones_are_refused():
    mixup = parse_augment("cifar+mixup")
    assert isinstance(mixup, Mixed) and mixup.name == "cifar+mixup:0.2" and mixup.mixes
    assert mixup.param_names == ("top", "left", "flip", "partner", "partner_top", "partner_left", "partner_flip", "lam")
    assert parse_augment("imagenet+cutmix").name == "imagenet+cutmix:1"
    for spec, message in [
        ("cifar+blend", "unknown mix 'blend'"),
        ("rotate+mixup", "built-in base augmentation"),
        ("cifar+mixup:x", re.escape("alpha in 'cifar+mixup:x' is not a number")),
        ("cifar+mixup:0", "must be a positive number"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_augment(spec)


def test_a_mixed_cache_records_partners_and_replays_every_view_exactly(mixed_cache, image_folder):
    path, spec = mixed_cache
    info = store.read_info(path)
    mixed = recorded_augment(info.augment)
    assert isinstance(mixed, Mixed) and info.layout.param_names == mixed.param_names
    source = open_dataset(f"imagefolder:{image_folder}")
    targets = store.CacheTargets(path)
    pipeline = ViewPipeline(info.input, mixed, source)
    partners = set()
    for row in range(len(source)):
        for params in targets.params(row):
            own, partner, theirs, how = mixed.split(params)
            partners.add(partner)
            assert 0 <= partner < len(source)
            # the stored view is the mix of the two BASE views, as the parameters say
            base = ViewPipeline(info.input, mixed.base)
            a = base.view(base.decode(source.load(row)), own)
            b = base.view(base.decode(source.load(partner)), theirs)
            expected = mixed.mix(a, b, how)
            assert torch.equal(pipeline.view(pipeline.decode(source.load(row)), params), expected)
            if mixed.kind == "mixup":
                assert 0.0 <= how[0] <= 1.0 and not torch.equal(expected, a)
    assert len(partners) > 5  # partners come from the whole dataset
    # the teacher, re-run on each replayed view, gives the stored logits (partners loaded again)
    assert recompute(path, 18, show_progress=False).ok


def test_replayed_mixed_views_feed_the_teacher_its_own_logits(mixed_cache, image_folder, teacher_weights):
    path, _ = mixed_cache
    source = open_dataset(f"imagefolder:{image_folder}")
    dataset = ReplayDataset(source, path)
    teacher = load_teacher("small_cnn", weights=str(teacher_weights), num_classes=3, image_size=8).model.eval()
    normalize = Normalize(store.read_info(path).input)
    for index in range(0, 18, 5):
        for view in range(3):
            image, label, logits = dataset[(index, view, 0)]
            with torch.inference_mode():
                fresh = teacher(normalize(image[None]))[0]
            np.testing.assert_allclose(fresh.numpy(), logits.numpy(), rtol=1e-5, atol=1e-5)
    cache = softlabels.open_cache(path)
    image, _, logits = cache.replay(source, 4, view=2)
    np.testing.assert_array_equal(image.numpy(), dataset[(4, 2, 0)][0].numpy())


def test_students_learn_mixed_views_from_the_targets_alone(mixed_cache, tmp_path, image_folder):
    path, spec = mixed_cache
    options = dict(
        cache=str(path), student="small_cnn", epochs=1, batch_size=6, workers=0, device="cpu", progress=False
    )
    with pytest.raises(ValueError, match=r"holds mixed views .* --alpha 1"):
        fit(FitConfig.from_options(**options, out=str(tmp_path / "a")))  # the default alpha 0.9 has a label term
    with pytest.raises(ValueError, match=r"labels only \(--loss ce\)"):
        fit(FitConfig.from_options(**options, loss="ce", out=str(tmp_path / "b")))
    kd, hard = Witness(), Witness()
    summary = fit(FitConfig.from_options(**options, alpha=1.0, out=str(tmp_path / "c")), hooks=[kd])
    assert summary["finished"] and np.isfinite(summary["train_loss"])
    assert fit(FitConfig.from_options(**options, loss="hard", out=str(tmp_path / "d")), hooks=[hard])["finished"]
    stored = softlabels.open_cache(path).logits(list(range(18)), view=None).reshape(-1, 3)
    for step in kd.steps:  # the stored mixed rows, KD alone (T^2 KL at T=4, no label term)
        assert all((stored == row.numpy()).all(-1).any() for row in step.targets)
        p, log_q = F.softmax(step.targets / 4, dim=1), F.log_softmax(step.student / 4, dim=1)
        torch.testing.assert_close(step.loss, 16 * (p * (p.log() - log_q)).sum(1).mean())
    for step in hard.steps:  # cross-entropy on the teacher's arg-max of the mixed image
        torch.testing.assert_close(step.loss, F.cross_entropy(step.student, step.targets.argmax(1)))
    with pytest.raises(ValueError, match="makes mixed views for a cache"):
        fit(
            FitConfig.from_options(
                **{**options, "cache": None},
                dataset=f"imagefolder:{image_folder}",
                augment=spec,
                out=str(tmp_path / "e"),
            )
        )


def test_the_cli_builds_a_mixed_cache_and_says_how_to_train_on_it(build_options, tmp_path):
    out = tmp_path / "cli.h5"
    args = ["build", "--dataset", build_options["dataset"], "--teacher", "small_cnn"]
    args += ["--weights", build_options["weights"], "--workers", "0", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(main, [*args, "--views", "2", "--augment", "cifar+mixup:0.4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert store.read_info(out).augment.name == "cifar+mixup:0.4"
    bad = CliRunner().invoke(main, [*args, "--augment", "cifar+mixup:-1", "--out", str(tmp_path / "bad.h5")])
    assert bad.exit_code == 1 and bad.output.startswith("error: ") and "positive" in bad.output
    assert "BASE+cutmix[:A]" in CliRunner().invoke(main, ["build", "--help"]).output
