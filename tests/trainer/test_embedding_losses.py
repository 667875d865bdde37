"""Losses from a cache's embeddings: the loss values, sums with KD, the projection, and the refusals."""

import re
import warnings

import numpy as np
import pytest
import torch

from softlabels import open_cache, open_dataset
from softlabels.build import BuildConfig, build_cache
from softlabels.models.registry import create_model
from softlabels.replay import ReplayDataset
from trainer import FitConfig, fit
from trainer.config import UntrainedClassifierWarning, warn_untrained_classifier
from trainer.losses import LOSSES, Embeddings, Objective, get_loss
from trainer.losses.relational import relational_loss
from trainer.projection import PROJECTION


@pytest.fixture
def embedding_cache(build_options, tmp_path):
    options = {**build_options, "out": str(tmp_path / "emb.h5"), "targets": "logits,embedding"}
    return str(build_cache(BuildConfig.from_options(**options)).path)


def test_embed_cosine_is_zero_when_the_projection_reproduces_the_teacher():
    teacher = torch.randn(6, 5)
    projection = torch.nn.Linear(5, 5)
    with torch.no_grad():
        projection.weight.copy_(torch.eye(5) * 2)  # a scale: the cosine does not mind
        projection.bias.zero_()
    loss = Objective("embed-cosine")(None, None, None, Embeddings(teacher, teacher, projection))
    assert float(loss.detach()) == pytest.approx(0, abs=1e-6)
    with_l1 = Objective("embed-cosine-l1")(None, None, None, Embeddings(teacher, teacher, projection))
    assert float(with_l1.detach()) == pytest.approx(0, abs=1e-5)  # row-standardised: the scale goes too


def test_relational_loss_ignores_width_and_scale_and_sees_structure():
    teacher = torch.randn(8, 16)
    rotated = teacher @ torch.linalg.qr(torch.randn(16, 16))[0] * 3  # same similarities, other basis and scale
    assert float(relational_loss(rotated, teacher)) == pytest.approx(0, abs=1e-5)
    assert float(relational_loss(torch.randn(8, 4), teacher)) > 0.05  # another width, other structure


def test_sums_of_losses_need_what_their_parts_need():
    both = get_loss("kd+embed-cosine")
    assert both.needs == {"logits", "labels", "embedding"} and both.projection and both.needs_teacher
    loss = both(4.0, 0.5)
    assert loss.label_term and "KD" in loss.label_term
    with pytest.raises(ValueError, match="unknown loss 'kd\\+nope'|unknown loss 'nope'"):
        get_loss("kd+nope")
    with pytest.raises(ValueError, match="two or more different"):
        get_loss("kd+kd")


@pytest.mark.parametrize("loss", ["embed-cosine", "embed-relational", "kd+embed-cosine-l1"])
def test_students_train_from_embeddings(embedding_cache, fit_options, loss):
    probe = () if "kd" in loss else ("knn",)  # an embedding loss alone is scored on the features
    summary = fit(FitConfig.from_options(cache=embedding_cache, loss=loss, probe=probe, **fit_options))
    assert summary["finished"] and summary["loss"] == loss and summary["train_loss"] > -1e-6  # a KL, up to rounding
    projection = torch.load(f"{fit_options['out']}/{PROJECTION}", weights_only=True) if "cosine" in loss else None
    if projection is not None:  # saved apart from the student: 256 features -> 256 teacher dims
        assert projection["in_features"] == 256 and projection["out_features"] == 256
        assert projection["loss"] == loss


@pytest.mark.parametrize("loss", ["embed-cosine", "embed-relational", "embed-cosine+embed-relational"])
def test_a_loss_from_embeddings_alone_warns_that_it_trains_no_classifier(loss):
    def run(**options):
        return FitConfig.from_options(cache="c.h5", student="small_cnn", out="run", **options)

    message = re.escape(f"--loss {loss} trains the student's features, never its classifier")
    with pytest.warns(UntrainedClassifierWarning, match=message):
        warn_untrained_classifier(run(loss=loss))
    with warnings.catch_warnings():  # a term that reads the logits, or probes that score the features: no warning
        warnings.simplefilter("error", UntrainedClassifierWarning)
        warn_untrained_classifier(run(loss=f"ce+{loss}"))
        warn_untrained_classifier(run(loss=f"kd+{loss}"))
        warn_untrained_classifier(run(loss=loss, probe=("linear",)))
    assert not get_loss(loss).trains_classifier and get_loss(f"ce+{loss}").trains_classifier


def test_embedding_losses_refuse_caches_without_embeddings(cache, fit_options):
    with pytest.raises(ValueError, match="stores no embeddings"):
        fit(FitConfig.from_options(cache=cache, loss="ce+embed-cosine", **fit_options))
    with warnings.catch_warnings():  # a refused run says its one line, not a warning about the run it will not be
        warnings.simplefilter("error", UntrainedClassifierWarning)
        with pytest.raises(ValueError, match="stores no embeddings"):
            fit(FitConfig.from_options(cache=cache, loss="embed-cosine", **fit_options))
    with pytest.raises(ValueError, match="stored embeddings: pass --cache"):
        fit(FitConfig.from_options(dataset="cifar10", loss="embed-relational", **fit_options))


@pytest.mark.parametrize("loss", ["embed-relational", "kd+embed-relational"])
def test_the_relational_loss_refuses_batches_of_one_view(embedding_cache, fit_options, tmp_path, loss):
    """One view has no other in its batch: the term would be 0 at every step, training nothing. The
    message names the term at fault, also inside a sum."""
    options = {**fit_options, "batch_size": 1, "out": str(tmp_path / "one")}
    with pytest.raises(ValueError, match="^--loss embed-relational relates the views .* use --batch-size 2 or more$"):
        fit(FitConfig.from_options(cache=embedding_cache, loss=loss, **options))
    assert not (tmp_path / "one").exists()


def test_logit_losses_refuse_a_cache_of_embeddings_alone(build_options, tmp_path, fit_options):
    options = {**build_options, "out": str(tmp_path / "only.h5"), "targets": "embedding"}
    only = str(build_cache(BuildConfig.from_options(**options)).path)
    with pytest.raises(ValueError, match="stores embeddings alone"):
        fit(FitConfig.from_options(cache=only, loss="kd+embed-cosine", **fit_options))


@pytest.mark.parametrize("name", [name for name, loss in LOSSES.items() if "embedding" in loss.needs])
def test_every_loss_from_embeddings_declares_itself(name):
    loss = LOSSES[name]
    assert loss.name == name and loss.description and "\n" not in loss.description and loss.needs_teacher
    torch.manual_seed(0)
    projection = torch.nn.Linear(4, 8) if loss.projection else None
    value = Objective(name)(torch.randn(6, 3), None, None, Embeddings(torch.randn(6, 4), torch.randn(6, 8), projection))
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="class weights"):
        Objective(name).loss.class_weights(np.zeros(6, int), np.zeros((6, 3)), 3)


def test_a_cache_of_several_teachers_teaches_the_embeddings_of_the_one_picked(build_options, tmp_path, fit_options):
    torch.manual_seed(7)
    other = tmp_path / "other.pt"
    torch.save(create_model("small_cnn", num_classes=3, in_channels=3, image_size=8).state_dict(), other)
    options = {**build_options, "out": str(tmp_path / "two.h5"), "targets": "logits,embedding"}
    options.update(teacher=("small_cnn", "small_cnn"), weights=(build_options["weights"], str(other)))
    two = str(build_cache(BuildConfig.from_options(**options)).path)
    with pytest.raises(ValueError, match=r"pick one with --ensemble teacher:NAME\|INDEX"):
        fit(FitConfig.from_options(cache=two, loss="embed-cosine", **fit_options))
    data = ReplayDataset(open_dataset(build_options["dataset"]), two, embeddings=True, ensemble="teacher:1")
    data.set_epoch(0)
    np.testing.assert_array_equal(data[3][3].numpy(), open_cache(two).embeddings(3)[1])  # member 1's, not mixed
    with pytest.raises(ValueError, match="not mixed: pick one with --ensemble teacher"):
        ReplayDataset(open_dataset(build_options["dataset"]), two, embeddings=True)
    summary = fit(FitConfig.from_options(cache=two, loss="embed-cosine", ensemble="teacher:1", **fit_options))
    assert summary["finished"]
