"""Images joined with cached targets: fingerprint check, exact replay, view schedule, worker-safe loading."""

import numpy as np
import pytest
import torch

from softlabels.data import open_dataset
from softlabels.models.preprocessing import Preprocessing
from softlabels.models.teachers import load_teacher
from softlabels.replay import EpochSampler, ViewSchedule, check_same_samples
from softlabels.store import CacheTargets, read_info
from softlabels.views import AUGMENTS, Normalize
from trainer.data import (
    CachedDataset,
    LabelledDataset,
    cached_training_data,
    make_loader,
    subset_indices,
)


def test_cache_refuses_changed_images(cache, image_folder):
    source = open_dataset(f"imagefolder:{image_folder}")
    assert check_same_samples(CacheTargets(cache), source) == read_info(cache).fingerprint
    (image_folder / "train" / "cat" / "0003.png").rename(image_folder / "train" / "cat" / "0003-renamed.png")
    (image_folder / "train" / "dog" / "0001.png").rename(image_folder / "train" / "frog" / "0099.png")
    with pytest.raises(
        ValueError,
        match=r"was not built from .*: 1 added \(e.g. frog/0099.png\), 1 removed "
        r"\(e.g. dog/0001.png\), 1 renamed \(e.g. cat/0003.png -> cat/0003-renamed.png\)",
    ):
        cached_training_data(cache)


def test_view_schedule_covers_every_view_evenly():
    schedule = ViewSchedule(num_samples=50, num_views=4, seed=3)
    for index in range(50):
        for start in (0, 1, 5):  # any 4 consecutive epochs use each view once
            assert sorted(schedule.view(index, e) for e in range(start, start + 4)) == [0, 1, 2, 3]
    first_epoch = [schedule.view(i, 0) for i in range(50)]
    assert len(set(first_epoch)) > 1  # samples do not move in lockstep
    assert first_epoch == [ViewSchedule(50, 4, 3).view(i, 0) for i in range(50)]


def test_sampler_reshuffles_each_epoch_and_shards_ranks():
    sampler = EpochSampler(np.arange(10), seed=0)
    first = [i for i, _, _ in sampler]
    sampler.set_epoch(1)
    second = [i for i, _, e in sampler]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    ranks = [list(EpochSampler(np.arange(10), seed=0, rank=r, world_size=3)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)  # padded to equal length
    assert {i for r in ranks for i, _, _ in r} == set(range(10))


def test_subset_takes_the_first_n_of_each_class():
    labels = np.array([0, 1, 0, 1, 2, 0, 2])
    assert subset_indices(labels, 2).tolist() == [0, 1, 2, 3, 4, 6]
    assert subset_indices(labels, None).tolist() == list(range(7))


def test_replayed_views_reproduce_the_cached_logits(multiview_cache, image_folder, teacher_weights):
    """The exactness proof of replay: each replayed view, fed to the teacher, gives its cached logits."""
    targets = CacheTargets(multiview_cache)
    source = open_dataset(f"imagefolder:{image_folder}")
    dataset = CachedDataset(source, targets)
    prep = targets.info.preprocessing
    teacher = load_teacher("small_cnn", weights=str(teacher_weights), num_classes=3, image_size=8).model.eval()
    assert len(np.unique(targets.params(0), axis=0)) > 1  # the views really differ
    for index in (0, 7, 17):
        for view in range(3):
            image, label, logits = dataset[(index, view, 0)]
            assert image.min() >= 0 and image.max() <= 1  # un-normalised
            with torch.inference_mode():
                replayed = teacher(Normalize(prep)(image[None]))[0]
            torch.testing.assert_close(replayed, logits, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(logits, torch.from_numpy(targets.logits(index, view)))
            assert label == source.labels[index]


def test_random_augmentation_is_seeded_per_sample_and_epoch(image_folder):
    source = open_dataset(f"imagefolder:{image_folder}")
    dataset = LabelledDataset(source, Preprocessing((0.5,) * 3, (0.25,) * 3, 8), augment=AUGMENTS["cifar"], seed=1)
    assert torch.equal(dataset[(4, 0, 2)][0], dataset[(4, 0, 2)][0])
    assert not all(torch.equal(dataset[(4, 0, 0)][0], dataset[(4, 0, e)][0]) for e in range(1, 4))


def _epoch(loader, sampler, epoch):
    sampler.set_epoch(epoch)
    return [(x.clone(), y.clone(), t.clone()) for x, y, t in loader]


@pytest.mark.parametrize("workers, start_method", [(0, None), (2, None), (1, "spawn")])
def test_lazy_cache_reads_the_same_in_workers(multiview_cache, image_folder, workers, start_method):
    source = open_dataset(f"imagefolder:{image_folder}")
    targets = CacheTargets(multiview_cache, memory_budget=0)  # read lazily, one handle per process
    assert not targets.in_memory
    dataset = CachedDataset(source, targets)
    sampler = EpochSampler(np.arange(len(source)), seed=0, schedule=ViewSchedule(len(source), 3, 0))
    loader = make_loader(dataset, 5, workers, torch.device("cpu"), sampler, start_method)
    expected = [dataset[item] for item in sampler]
    got = _epoch(loader, sampler, 0)
    assert torch.equal(torch.cat([b[0] for b in got]), torch.stack([e[0] for e in expected]))
    assert torch.equal(torch.cat([b[2] for b in got]), torch.stack([e[2] for e in expected]))
    assert len(_epoch(loader, sampler, 1)) == 4  # persistent workers serve the next epoch
    targets.close()


def test_evaluation_set_defaults_to_the_test_split_and_must_share_classes(image_folder, make_images, tmp_path):
    from trainer.data import eval_dataset

    train = open_dataset(f"imagefolder:{image_folder}")
    prep = Preprocessing((0.5,) * 3, (0.25,) * 3, 8)
    assert eval_dataset(None, train, prep, "data", False).source.split == "test"
    assert eval_dataset("none", train, prep, "data", False) is None
    other = make_images(tmp_path / "other", splits=("test",))
    (other / "test" / "frog").rename(other / "test" / "toad")
    with pytest.raises(ValueError, match="has classes cat, dog, toad but the training set has cat, dog, frog"):
        eval_dataset(f"imagefolder:{other}", train, prep, "data", False)
