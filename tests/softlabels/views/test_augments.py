"""Views: parameters come from (seed, key) alone and replaying them gives the same bits."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from softlabels.models.preprocessing import Preprocessing
from softlabels.views import AUGMENTS, Normalize, ViewPipeline, fit_size, parse_augment, to_tensor, view_rng

RGB = Preprocessing((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 8)
GREY = Preprocessing((0.5,), (0.25,), 8)


def finish(x, prep):
    """A view at the input size, normalised: what the teacher is fed."""
    return Normalize(prep)(fit_size(x, prep.image_size)[None])[0]


def make_view(x, augment, params, prep):
    return ViewPipeline(prep, parse_augment(augment)).view(x, params)


def sample_views(name, seed, key, views, height, width, image_size) -> np.ndarray:
    """(V, P) int32 parameters of `views` views of an image of `height` x `width`: the v-th draw from
    `view_rng(seed, key)` (what the pipeline stores, drawn here without it)."""
    augment, rng = parse_augment(name), view_rng(seed, key)
    return np.stack([augment.encode(augment.sample(rng, height, width, image_size)) for _ in range(views)])


def random_image(height=8, width=8, mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


def random_tensor(height=8, width=8, channels=3, seed=0) -> torch.Tensor:
    return torch.rand(channels, height, width, generator=torch.Generator().manual_seed(seed))


# --- preprocessing -------------------------------------------------------------------------------


def test_to_tensor_converts_to_the_requested_channels():
    rgb, grey = random_image(mode="RGB"), random_image(mode="L")
    assert to_tensor(rgb, 3).shape == (3, 8, 8) and to_tensor(rgb, 1).shape == (1, 8, 8)
    assert to_tensor(grey, 3).shape == (3, 8, 8) and to_tensor(grey, 1).shape == (1, 8, 8)
    x = to_tensor(grey, 1)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal((x[0] * 255).round().numpy(), np.asarray(grey))


def test_finish_only_normalises_at_the_right_size():
    x = random_tensor()
    mean, std = torch.tensor(RGB.mean).view(3, 1, 1), torch.tensor(RGB.std).view(3, 1, 1)
    assert torch.equal(finish(x, RGB), (x - mean) / std)


def test_finish_resizes_shorter_side_then_centre_crops():
    x = random_tensor(16, 24)
    expected = v2.Compose([v2.Resize(8, antialias=True), v2.CenterCrop(8)])(x)
    assert torch.equal(finish(x, RGB), finish(expected, RGB))
    wide = random_tensor(8, 12)  # shorter side already right: a crop, no resampling
    mean, std = torch.tensor(RGB.mean).view(3, 1, 1), torch.tensor(RGB.std).view(3, 1, 1)
    assert torch.equal(finish(wide, RGB), (wide[:, :, 2:10] - mean) / std)


def test_views_refuse_the_wrong_channel_count():
    with pytest.raises(ValueError, match="1 channels but the input expects 3"):
        make_view(random_tensor(channels=1), "none", (), RGB)


# --- parameters ----------------------------------------------------------------------------------


def test_params_depend_on_seed_and_key_only():
    first = sample_views("imagenet", 3, "cat/0001.png", 4, 32, 32, 32)
    sample_views("imagenet", 3, "dog/0002.png", 4, 32, 32, 32)  # other draws in between change nothing
    np.testing.assert_array_equal(sample_views("imagenet", 3, "cat/0001.png", 4, 32, 32, 32), first)
    assert not np.array_equal(sample_views("imagenet", 3, "cat/0002.png", 4, 32, 32, 32), first)
    assert not np.array_equal(sample_views("imagenet", 4, "cat/0001.png", 4, 32, 32, 32), first)
    assert view_rng(3, "cat/0001.png").integers(1 << 30) == view_rng(3, "cat/0001.png").integers(1 << 30)


def test_view_v_is_the_v_th_draw():
    rng = view_rng(0, "7")
    draws = [AUGMENTS["cifar"].sample(rng, 32, 32, 32) for _ in range(3)]
    np.testing.assert_array_equal(sample_views("cifar", 0, "7", 3, 32, 32, 32), np.stack(draws))


@pytest.mark.parametrize("name", AUGMENTS)
def test_sample_views_shape_and_dtype(name):
    params = sample_views(name, 0, "k", 5, 8, 8, 8)
    assert params.dtype == np.int32 and params.shape == (5, len(AUGMENTS[name].param_names))


@pytest.mark.parametrize("height, width", [(32, 32), (8, 8), (20, 50), (60, 7)])
def test_params_stay_in_bounds(height, width):
    for seed in range(200):
        top, left, flip = sample_views("cifar", seed, "k", 1, height, width, 8)[0]
        assert 0 <= top <= 8 and 0 <= left <= 8 and flip in (0, 1)
        top, left, h, w, flip = sample_views("imagenet", seed, "k", 1, height, width, 8)[0]
        assert 0 < h and 0 < w and 0 <= top and 0 <= left and top + h <= height and left + w <= width
        assert flip in (0, 1)


def test_imagenet_falls_back_to_torchvisions_central_crop():
    # Too elongated for any of the ten tries: RandomResizedCrop's fallback, the widest 4:3 centre crop.
    np.testing.assert_array_equal(sample_views("imagenet", 0, "k", 1, 4, 100, 8)[0, :4], [0, 47, 4, 5])


def test_unknown_augment_lists_the_names():
    with pytest.raises(ValueError, match="choose one of: none, flip, cifar, imagenet"):
        parse_augment("mixup")


# --- applying them -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUGMENTS)
def test_replay_is_bit_exact(name):
    x = random_tensor(11, 9)
    for params in sample_views(name, 1, "key", 6, 11, 9, 8):
        first = make_view(x, name, params, RGB)
        again = make_view(x.clone(), name, torch.from_numpy(params.copy()), RGB)  # as the trainer replays it
        assert first.shape == (3, 8, 8) and torch.equal(first, again)


def test_cifar_centre_params_are_identity_and_offsets_pad_with_black():
    cifar = parse_augment("cifar")
    x = random_tensor()
    assert torch.equal(cifar.apply(x, np.array([4, 4, 0]), 8), x)
    shifted = cifar.apply(x, np.array([0, 0, 0]), 8)
    assert torch.equal(shifted[:, 4:, 4:], x[:, :4, :4]) and shifted[:, :4].abs().sum() == 0
    assert torch.equal(cifar.apply(x, np.array([4, 4, 1]), 8), x.flip(-1))


def test_flip_flips():
    x = random_tensor()
    flip = parse_augment("flip")
    assert torch.equal(flip.apply(x, np.array([1]), 8), x.flip(-1))
    assert torch.equal(flip.apply(x, np.array([0]), 8), x)


def test_imagenet_crops_then_resizes_to_image_size():
    imagenet = parse_augment("imagenet")
    x = random_tensor(20, 30)
    view = imagenet.apply(x, np.array([2, 3, 10, 14, 0]), 8)
    expected = v2.functional.resize(x[:, 2:12, 3:17], [8, 8], antialias=True)
    assert view.shape == (3, 8, 8) and torch.equal(view, expected)
    whole = random_tensor(8, 8)
    assert torch.equal(imagenet.apply(whole, np.array([0, 0, 8, 8, 0]), 8), whole)


def test_params_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="do not fit"):
        parse_augment("imagenet").apply(random_tensor(), np.array([4, 4, 8, 8, 0]), 8)
    with pytest.raises(ValueError, match="takes 3 parameters"):
        parse_augment("cifar").apply(random_tensor(), np.array([4, 4]), 8)


def test_views_of_one_decoded_sample():
    pipeline = ViewPipeline(RGB, AUGMENTS["cifar"])
    x = pipeline.decode(random_image())
    params = pipeline.stored_params(x, 0, "k", 5)
    np.testing.assert_array_equal(params, sample_views("cifar", 0, "k", 5, 8, 8, 8))
    views = pipeline.views(x, params)
    assert views.shape == (5, 3, 8, 8)
    assert torch.equal(views[2], make_view(to_tensor(random_image(), 3), "cifar", params[2], RGB))


@pytest.mark.parametrize("prep", [RGB, GREY], ids=["rgb", "grey"])
def test_plain_view_is_the_image_at_the_input_size(prep):
    image = random_image(12, 10)
    pipeline = ViewPipeline(prep)
    views = pipeline.views(pipeline.decode(image), sample_views("none", 0, "k", 1, 12, 10, 8))
    assert views.shape == (1, prep.channels, 8, 8)
    assert torch.equal(views[0], fit_size(to_tensor(image, prep.channels), 8))
