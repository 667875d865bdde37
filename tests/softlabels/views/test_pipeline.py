"""One pipeline makes every view: the teacher pass, `verify --recompute`, the trainer and `Cache.replay`
hand out the same bits for the same stored view."""

import numpy as np
import pytest
import torch

import softlabels
from softlabels import audit, store
from softlabels.build import TeacherInputs
from softlabels.data import open_dataset
from softlabels.views import AUGMENTS, Normalize, ViewPipeline, recorded_augment
from trainer.data import CachedDataset


@pytest.mark.parametrize("kind", ["full", "multiview", "merged_views"])
def test_every_consumer_sees_the_same_view(cache_of, image_folder, kind):
    path = cache_of(kind)
    info = store.read_info(path)
    source = open_dataset(f"imagefolder:{image_folder}")
    pipeline = ViewPipeline(info.preprocessing, recorded_augment(info.augment))
    targets = store.CacheTargets(path)
    trainer_data = CachedDataset(source, targets)
    cache = softlabels.open_cache(path)
    for index in (0, 9, 17):
        stored = targets.rows(index)
        recomputed = audit.teacher._views(pipeline, source, index, stored, info.layout.num_views)
        built = None
        if info.augment.seeds is None:  # a merged view set holds views of several seeds: no single build
            built = TeacherInputs(source, pipeline, info.layout.num_views, info.augment.seed)[index][1]
        for view in range(info.layout.num_views):
            image, label, logits = trainer_data[(index, view, 0)]
            replayed, replay_label, replay_logits = cache.replay(source, source.keys[index], view)
            assert torch.equal(image, replayed) and torch.equal(image, recomputed[view])
            if built is not None:
                assert torch.equal(image, built[view])
            assert label == replay_label and torch.equal(logits, replay_logits)
    cache.close()


def test_replay_normalises_with_the_recorded_statistics(cache_of, image_folder, teacher_weights):
    path = cache_of("multiview")
    with softlabels.open_cache(path) as cache:
        source = open_dataset(f"imagefolder:{image_folder}")
        raw, _, logits = cache.replay(source, 3, view=1)
        normalised, _, _ = cache.replay(source, 3, view=1, normalize=True)
        assert torch.equal(normalised, Normalize(cache.info.preprocessing)(raw[None])[0])
        from softlabels.models.teachers import load_teacher

        teacher = load_teacher("small_cnn", weights=teacher_weights, num_classes=3, image_size=8).model
        with torch.inference_mode():
            torch.testing.assert_close(teacher(normalised[None])[0], logits, rtol=1e-4, atol=1e-5)
        with pytest.raises(IndexError, match="view 2 out of range"):
            cache.replay(source, 3, view=2)


def test_replay_refuses_other_images(cache_of, make_images, tmp_path):
    other = open_dataset(f"imagefolder:{make_images(tmp_path / 'other', per_class=(4, 4, 4))}")
    with softlabels.open_cache(cache_of("full")) as cache, pytest.raises(ValueError, match="was not built from"):
        cache.replay(other, 0)


def test_normalize_is_elementwise_and_exact():
    prep = softlabels.Preprocessing((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616), 8)
    x = torch.rand(2, 3, 8, 8)
    mean, std = torch.tensor(prep.mean).view(3, 1, 1), torch.tensor(prep.std).view(3, 1, 1)
    assert torch.equal(Normalize(prep)(x), (x - mean) / std)
    assert torch.equal(Normalize(prep)(x.contiguous(memory_format=torch.channels_last)), (x - mean) / std)
    np.testing.assert_array_equal(
        Normalize(prep)(x).numpy(),
        ((x.numpy() - np.float32(prep.mean).reshape(3, 1, 1)) / np.float32(prep.std).reshape(3, 1, 1)),
    )


def test_format_1_inputs_resample_float_pixels_and_new_ones_uint8():
    """Caches written before `pixels` existed replay exactly as they were built (float32 resampling);
    new inputs crop and resize uint8 pixels, as torchvision's fast path does."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from softlabels.views import to_pixels, to_tensor

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    params = np.array([3, 5, 30, 40, 1], dtype=np.int32)  # imagenet: top, left, height, width, flip
    old = softlabels.Preprocessing((0.5,) * 3, (0.25,) * 3, 16)
    new = softlabels.Preprocessing((0.5,) * 3, (0.25,) * 3, 16, pixels="uint8")
    for prep, decoded in ((old, to_tensor(image, 3)), (new, to_pixels(image, 3))):
        pipeline = ViewPipeline(prep, AUGMENTS["imagenet"])
        crop = decoded[:, 3:33, 5:45]
        expected = TF.resize(crop, [16, 16], antialias=True).flip(-1)
        if expected.dtype == torch.uint8:
            expected = expected.float() / 255
        assert torch.equal(pipeline.view(pipeline.decode(image), params), expected)
    assert "pixels" not in old.to_dict() and new.to_dict()["pixels"] == "uint8"


def test_an_eval_transform_resizes_the_shorter_side_then_crops_the_centre():
    """As timm's and torchvision's eval transforms: shorter side to `resize` (PIL, antialiased), then a
    centre crop; a 20x10 image resized to 8 is 16x8, and the crop keeps its columns 4..12."""
    from PIL import Image

    from softlabels.views import eval_fit

    pixels = np.random.default_rng(0).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    expected = image.resize((16, 8), Image.BILINEAR).crop((4, 0, 12, 8))
    got = eval_fit(image, 3, resize=8, size=8, interpolation="bilinear")
    assert got.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
