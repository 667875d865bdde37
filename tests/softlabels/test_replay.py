"""Your own loop, Lightning, your own augmentations: every stored view replays exactly anywhere."""

import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import softlabels
from softlabels import store
from softlabels.build import BuildConfig, build_cache
from softlabels.cli import main
from softlabels.models.teachers import load_teacher
from softlabels.replay import EpochSampler, UnscheduledReplayWarning, ViewSchedule
from tests.trainer.witness import Witness


@pytest.fixture
def four_views(build_options, tmp_path):
    options = {**build_options, "out": str(tmp_path / "four.h5"), "views": 4, "augment": "cifar", "seed": 3}
    return build_cache(BuildConfig.from_options(**options)).path


def served_view(cache_logits: np.ndarray, logits: torch.Tensor) -> int:
    """Which stored view a served item is: the one whose logits it carries."""
    return int(np.argmin(np.abs(cache_logits - logits.numpy()).max(axis=-1)))


def test_a_plain_loop_sees_every_view_once_per_four_epochs(four_views, image_folder):
    cache = softlabels.open_cache(four_views)
    data = cache.dataset(softlabels.open_dataset(f"imagefolder:{image_folder}"))
    seen = {i: [] for i in range(len(data))}
    for epoch in range(8):
        data.set_epoch(epoch)
        for index in torch.randperm(len(data)).tolist():  # what DataLoader(shuffle=True) hands the dataset
            x, label, logits = data[index]
            seen[index].append(served_view(cache.logits(index, view=None), logits))
    assert all(sorted(views[:4]) == [0, 1, 2, 3] and sorted(views[4:]) == [0, 1, 2, 3] for views in seen.values())
    assert len({tuple(v[:4]) for v in seen.values()}) > 1  # samples do not move in lockstep


@pytest.mark.parametrize("start_method", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])  # spawn: ~25 s
def test_persistent_workers_follow_set_epoch(four_views, image_folder, start_method):
    """The README's own loop with worker processes that outlive the epoch: each epoch, every sample
    comes with the view the schedule gives it (its pixels and its logits)."""
    cache = softlabels.open_cache(four_views)
    source = softlabels.open_dataset(f"imagefolder:{image_folder}")
    data = cache.dataset(source, normalize=False)
    loader = torch.utils.data.DataLoader(
        data, batch_size=5, num_workers=2, persistent_workers=True, multiprocessing_context=start_method
    )
    for epoch in range(5):
        data.set_epoch(epoch)
        served = [torch.cat(parts) for parts in zip(*loader)]
        for index in range(len(data)):
            view = data.schedule.view(index, epoch)
            image, _, logits = cache.replay(source, index, view=view)
            assert torch.equal(served[0][index], image) and torch.equal(served[2][index], logits), (epoch, index)
    pickled = __import__("pickle").loads(__import__("pickle").dumps(data))  # a copy outside a worker's start
    assert pickled.epoch == 4
    pickled.set_epoch(7)
    assert data.epoch == 4  # its own epoch


def test_without_set_epoch_a_multi_view_cache_warns_once(four_views, image_folder, cache_of):
    data = softlabels.open_cache(four_views).dataset(f"imagefolder:{image_folder}")
    with pytest.warns(UnscheduledReplayWarning, match="set_epoch"):
        data[0]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data[1]  # once only
        softlabels.open_cache(cache_of("full")).dataset(f"imagefolder:{image_folder}")[0]  # one view: nothing to say


def test_the_dataset_checks_the_images_when_made(four_views, make_images, tmp_path):
    other = make_images(tmp_path / "other", per_class=(4, 4, 4))
    with pytest.raises(ValueError, match="was not built from"):
        softlabels.open_cache(four_views).dataset(f"imagefolder:{other}")


def test_inputs_are_normalised_with_the_recorded_statistics(four_views, image_folder, teacher_weights):
    cache = softlabels.open_cache(four_views)
    data = cache.dataset(f"imagefolder:{image_folder}")
    teacher = load_teacher("small_cnn", weights=teacher_weights, num_classes=3, image_size=8).model
    for index, view in ((0, 0), (5, 3), (17, 2)):
        x, _, logits = data[(index, view, 0)]
        stored = torch.from_numpy(cache.logits(index, view))  # the row of THAT view, not the served one
        assert torch.equal(logits, stored)
        with torch.inference_mode():
            torch.testing.assert_close(teacher(x[None])[0], stored, rtol=1e-4, atol=1e-5)


def test_a_lightning_trainer_replays_every_view_once_per_four_epochs(four_views, image_folder):
    lightning = pytest.importorskip("lightning")
    cache = softlabels.open_cache(four_views)
    data = cache.dataset(f"imagefolder:{image_folder}")
    stored = np.stack([cache.logits(i, view=None) for i in range(len(data))])
    seen: dict[int, list[int]] = {i: [] for i in range(len(data))}

    class Student(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))

        def training_step(self, batch, _):
            x, labels, teacher_logits = batch
            for logits in teacher_logits:  # which stored view each item is
                distance = np.abs(stored - logits.numpy()[None, None]).max(axis=-1)
                index, view = np.unravel_index(np.argmin(distance), distance.shape)
                seen[int(index)].append(int(view))
            return softlabels_kd(self.net(x), teacher_logits, labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

        def train_dataloader(self):  # Lightning calls the sampler's set_epoch every epoch
            return torch.utils.data.DataLoader(data, batch_size=5, sampler=data.sampler())

    from trainer.losses import kd_loss as softlabels_kd

    trainer = lightning.Trainer(
        max_epochs=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Student())
    assert all(sorted(views) == [0, 1, 2, 3] for views in seen.values()), seen


# ----------------------------------------------------------------------------- user augmentations

AUGMENTS = '''
import multiprocessing
import os
import random

import numpy as np
import torch
from torchvision.transforms import v2
from softlabels.views import Augment


class Shade(Augment):
    """Darken by a float factor, flip by an int."""
    name = "shade"
    param_names = ("factor", "flip")
    param_dtypes = ("float32", "int32")

    def sample(self, rng, height, width, image_size):
        return rng.uniform(0.3, 1.0), rng.integers(0, 2)

    def apply(self, x, params, image_size):
        factor, flip = params
        x = x * torch.tensor(factor, dtype=torch.float32)
        return x.flip(-1) if flip else x


def strong():
    return v2.Compose([v2.RandAugment(num_ops=2, magnitude=9), v2.ColorJitter(0.4, 0.4, 0.4, 0.1),
                       v2.RandomErasing(p=0.5, value=0)])


def unseeded():
    """Draws from numpy's global RNG: replayable, as the pipeline seeds it per view."""
    return v2.Lambda(lambda img: (img.float() * float(np.random.rand())).to(torch.uint8))


class Globals(Augment):
    """Draws from Python's random and torch's default generator in `apply`: seeded per view, replayable."""
    name = "globals"
    param_names = ("flip",)

    def sample(self, rng, height, width, image_size):
        return (rng.integers(0, 2),)

    def apply(self, x, params, image_size):
        x = x * (0.5 + random.random() / 2) * (0.5 + torch.rand(1) / 2)
        return x.flip(-1) if params[0] else x


def entropy():
    """A generator of its own, seeded from the OS: no seed can make it replay."""
    return v2.Lambda(lambda img: (img.float() * float(np.random.default_rng().random())).to(torch.uint8))


class Breakable(Shade):
    """Shade, until BREAK_REPLAY is set: then a generator of its own darkens every view."""

    def apply(self, x, params, image_size):
        if os.environ.get("BREAK_REPLAY"):
            return x * float(np.random.default_rng().random())
        return super().apply(x, params, image_size)


class PerProcess(Augment):
    """Depends on which process makes the view: the same twice in one process, not in a worker."""
    name = "per_process"
    param_names = ("flip",)

    def sample(self, rng, height, width, image_size):
        return (rng.integers(0, 2),)

    def apply(self, x, params, image_size):
        return x * (0.5 if multiprocessing.parent_process() is not None else 1.0)


NOT_AN_AUGMENT = 3
'''


@pytest.fixture
def augment_file(tmp_path):
    path = tmp_path / "my_augments.py"
    path.write_text(textwrap.dedent(AUGMENTS))
    return path


@pytest.mark.parametrize("name", ["Shade", "strong", "unseeded", "Globals"])
def test_user_augmentations_replay_exactly(name, augment_file, build_options, image_folder, teacher_weights, tmp_path):
    """The replay proof for user code: each replayed view fed to the teacher gives its cached logits."""
    spec = f"{augment_file}:{name}"
    options = {**build_options, "out": str(tmp_path / f"{name}.h5"), "views": 3, "augment": spec, "workers": 0}
    path = build_cache(BuildConfig.from_options(**options)).path
    again = build_cache(
        BuildConfig.from_options(**{**options, "out": str(tmp_path / "again.h5"), "workers": 2, "batch_size": 5})
    ).path
    info = store.read_info(path)
    assert info.augment.source == spec and len(info.augment.source_sha256) == 64 and info.augment.repr
    np.testing.assert_array_equal(store.CacheTargets(path).params(4), store.CacheTargets(again).params(4))
    cache = softlabels.open_cache(path)
    data = cache.dataset(f"imagefolder:{image_folder}")
    teacher = load_teacher("small_cnn", weights=teacher_weights, num_classes=3, image_size=8).model
    for index in range(len(data)):
        for view in range(3):
            x, _, logits = data[(index, view, 0)]
            stored = torch.from_numpy(cache.logits(index, view))  # the row of THAT view, not the served one
            assert torch.equal(logits, stored)
            with torch.inference_mode():
                torch.testing.assert_close(teacher(x[None])[0], stored, rtol=1e-4, atol=1e-5)
    if name == "Shade":
        params = store.CacheTargets(path).params(0)
        factors = params[:, 0].view(np.float32)
        assert ((0.3 <= factors) & (factors <= 1.0)).all() and set(params[:, 1]) <= {0, 1}


def test_a_changed_augmentation_is_refused(augment_file, build_options, image_folder, tmp_path):
    options = {**build_options, "out": str(tmp_path / "c.h5"), "views": 2, "augment": f"{augment_file}:strong"}
    path = build_cache(BuildConfig.from_options(**options)).path
    augment_file.write_text(augment_file.read_text().replace("magnitude=9", "magnitude=5"))
    from softlabels.views import user

    user._LOADED.clear()  # a new process would load the edited file
    with pytest.raises(ValueError, match=r"changed since .* was built \(source_sha256: cache has"):
        softlabels.open_cache(path).dataset(f"imagefolder:{image_folder}")
    from trainer.data import cached_training_data

    cached_training_data(str(path), allow_changed_augment=True)  # --inconsistent-augment: the way out


def test_verify_recompute_tells_views_that_do_not_replay_from_another_teacher(
    augment_file, build_options, teacher_weights, tmp_path, monkeypatch
):
    options = {**build_options, "views": 2, "augment": f"{augment_file}:Breakable"}
    path = build_cache(BuildConfig.from_options(**options)).path
    verify = ["verify", str(path), "--recompute", "4", "--device", "cpu"]
    assert CliRunner().invoke(main, verify).exit_code == 0
    monkeypatch.setenv("BREAK_REPLAY", "1")
    result = CliRunner().invoke(main, verify)
    assert result.exit_code == 1 and "the views do not replay: 4 of 4 samples came out different" in result.output
    assert "another teacher" not in result.output and "Traceback" not in result.output
    monkeypatch.delenv("BREAK_REPLAY")
    torch.manual_seed(5)
    other = load_teacher("small_cnn", num_classes=3, image_size=8).model
    torch.save(other.state_dict(), tmp_path / "other.pt")
    result = CliRunner().invoke(main, [*verify, "--weights", str(tmp_path / "other.pt")])
    assert result.exit_code == 1 and "the teacher's logits differ" in result.output, result.output
    assert "do not replay" not in result.output


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing", "does not define 'missing'"),
        ("NOT_AN_AUGMENT", "name an Augment .* torchvision v2 transform"),
        (
            "entropy",
            r"augment .*:entropy does not replay: view 0 of sample cat/0000.png came out different when "
            r"made again, .* it likely draws from unseeded randomness",
        ),
        (
            "PerProcess",
            r"augment .*:PerProcess does not replay: view 0 of sample cat/0000.png came out different in "
            r"a fresh worker process",
        ),
    ],
)
def test_bad_augmentations_are_one_line_errors(name, message, augment_file, image_folder, teacher_weights, tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--dataset",
            f"imagefolder:{image_folder}",
            "--teacher",
            "small_cnn",
            "--weights",
            str(teacher_weights),
            "--views",
            "2",
            "--augment",
            f"{augment_file}:{name}",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "x.h5"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and __import__("re").search(message, result.output)
    assert not list(tmp_path.glob("x.h5*"))  # nothing written


def test_an_epoch_sampler_resumed_mid_epoch_skips_exactly_the_items_done():
    """`set_epoch(epoch, start)` continues an epoch after `start` items: the rest of the same order."""
    schedule = ViewSchedule(10, 4, seed=2)
    for per_decode in (1, 2):
        sampler = EpochSampler(np.arange(10), seed=5, schedule=schedule, per_decode=per_decode)
        sampler.set_epoch(3)
        whole = list(sampler)
        sampler.set_epoch(3, start=4)
        assert list(sampler) == whole[4:] and len(whole) == 10
        sampler.set_epoch(4)
        assert [i for i, *_ in sampler] != [i for i, *_ in whole]  # another epoch, another order of samples


def test_several_views_of_one_decode(four_views, image_folder):
    cache = softlabels.open_cache(four_views)
    data = cache.dataset(f"imagefolder:{image_folder}", normalize=False)
    sampler = data.sampler(per_decode=2)
    seen = {i: [] for i in range(len(data))}
    for epoch in range(4):
        sampler.set_epoch(epoch)
        for index, views, e in sampler:
            images, labels, logits = data[(index, views, e)]
            assert images.shape == (2, 3, 8, 8) and labels.tolist() == [int(cache.labels[index])] * 2
            for image, view, got in zip(images, views, logits):
                single, _, expected = data[(index, view, e)]
                assert torch.equal(image, single) and torch.equal(got, expected)
            seen[index] += list(views)
    assert all(sorted(views[:4]) == [0, 1, 2, 3] and sorted(views[4:]) == [0, 1, 2, 3] for views in seen.values())


def test_trainer_takes_several_views_per_decode(four_views, tmp_path):
    from trainer import FitConfig, fit

    options = dict(
        cache=str(four_views),
        student="small_cnn",
        epochs=2,
        batch_size=4,
        workers=0,
        device="cpu",
        progress=False,
        views_per_decode=2,
        out=str(tmp_path / "r2"),
    )
    witness = Witness()
    summary = fit(FitConfig.from_options(**options), hooks=[witness])
    assert summary["finished"] and summary["config"]["data"]["views_per_decode"] == 2
    # 18 samples, 2 a batch (4 images / 2 views): 9 steps an epoch, each step 2 views of each of 2 samples
    assert len(witness.steps) == 18 and all(len(step.labels) == 4 for step in witness.steps)
    cache = softlabels.open_cache(four_views)
    stored = np.stack([cache.logits(i, view=None) for i in range(len(cache))])  # (N, V, C)
    seen: dict[int, list[int]] = {i: [] for i in range(len(cache))}
    for step in witness.steps:
        assert torch.equal(step.labels[0::2], step.labels[1::2])
        for pair in (step.targets[0:2], step.targets[2:4]):
            where = [np.argwhere((stored == row.numpy()).all(-1)) for row in pair]  # (sample, view) of each
            (first, view_a), (second, view_b) = where[0][0], where[1][0]
            assert first == second and view_a != view_b, "the two images of a decode are not two views of one sample"
            seen[int(first)] += [int(view_a), int(view_b)]
    assert all(sorted(views) == [0, 1, 2, 3] for views in seen.values())  # every view once in 2 epochs
    for bad, message in (
        ({"batch_size": 5}, "divide --batch-size"),
        ({"views_per_decode": 8, "batch_size": 8}, "more than the 4"),
        ({"cache": None, "dataset": "cifar10"}, "needs --cache"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(FitConfig.from_options(**{**options, **bad, "out": str(tmp_path / "bad")}))
