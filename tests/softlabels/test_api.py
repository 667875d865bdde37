"""`import softlabels`: what a user's own training loop needs, without the CLI."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

import softlabels
from softlabels import store


def test_import_is_light_and_exports_the_api():
    code = (
        "import sys, softlabels; heavy = {'torch', 'h5py', 'matplotlib'} & set(sys.modules); "
        "assert not heavy, heavy; print(softlabels.__version__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name in ("open_cache", "verify", "build_cache", "BuildConfig", "open_dataset", "read_info"):
        assert callable(getattr(softlabels, name)) and name in softlabels.__all__ and name in dir(softlabels)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        softlabels.nope  # noqa: B018


def test_a_training_loop_of_ones_own(build_options, image_folder):
    result = softlabels.build_cache(
        softlabels.BuildConfig.from_options(**{**build_options, "views": 2, "augment": "flip"})
    )
    softlabels.verify(result.path)
    assert softlabels.read_info(result.path).layout.num_views == 2
    cache = softlabels.open_cache(result.path)
    source = softlabels.open_dataset(f"imagefolder:{image_folder}", "train")
    assert cache.check_dataset(source).startswith("sha256:")
    assert cache.check_dataset(f"imagefolder:{image_folder}") == cache.check_dataset(source)
    for index in range(len(cache)):
        key, label = cache.keys[index], int(cache.labels[index])
        assert source.keys[index] == key and 0 <= label < len(cache.classes)
        soft = cache.targets(key, view=1, temperature=2.0)
        assert soft.shape == (3,) and soft.sum() == pytest.approx(1, abs=1e-6)
    assert cache.classes == ["cat", "dog", "frog"]


def test_targets_and_logits(cache_of, dense):
    path = cache_of("merged_views")
    logits = dense(path)
    with softlabels.open_cache(path) as cache:
        assert len(cache) == 18 and cache.num_views == 4 and "4 view(s)" in repr(cache)
        key = cache.keys[5]
        assert cache.index_of(key) == 5
        np.testing.assert_array_equal(cache.logits(5, view=2), logits[5, 2])
        np.testing.assert_array_equal(cache.logits(key, view=None), logits[5])
        np.testing.assert_array_equal(cache.logits([1, key, np.int64(7)]), logits[[1, 5, 7], 0])
        np.testing.assert_array_equal(cache.logits(-1), logits[-1, 0])
        expected = np.exp(logits[5, 2] / 2) / np.exp(logits[5, 2] / 2).sum()
        np.testing.assert_allclose(cache.targets(key, view=2, temperature=2.0), expected, rtol=1e-5)
        assert cache.targets([0, 1], view=None).shape == (2, 4, 3)
        sharp, soft = cache.targets(0, temperature=0.5), cache.targets(0, temperature=4.0)
        assert sharp.max() >= soft.max()


def test_topk_targets_are_expanded(cache_of):
    with softlabels.open_cache(cache_of("topk")) as cache:
        targets = cache.targets(range(len(cache)))
        assert targets.shape == (18, 3) and np.allclose(targets.sum(-1), 1, atol=1e-5)


def test_clear_errors(cache_of, write_partial, tmp_path, make_images):
    path = cache_of("full")
    cache = softlabels.open_cache(path)
    with pytest.raises(KeyError, match="'dog/9999.png' is not a key of .*look like 'cat/0000.png'"):
        cache.targets("dog/9999.png")
    with pytest.raises(IndexError, match="view 1 out of range: .* has 1 view"):
        cache.targets(0, view=1)
    with pytest.raises(IndexError, match="sample 18 out of range"):
        cache.logits(18)
    with pytest.raises(ValueError, match="temperature must be positive"):
        cache.targets(0, temperature=0)
    with pytest.raises(FileNotFoundError, match="cache not found"):
        softlabels.open_cache(tmp_path / "missing.h5")
    with pytest.raises(store.CacheError, match="incomplete"):
        softlabels.open_cache(write_partial(path, tmp_path / "stopped.h5"))
    other = make_images(tmp_path / "other", per_class=(7, 5, 5))  # one frog fewer
    with pytest.raises(ValueError, match=r"1 removed \(e.g. frog/0005.png\)"):
        cache.check_dataset(f"imagefolder:{other}")


def test_a_cache_crosses_to_dataloader_workers(cache_of):
    cache = softlabels.open_cache(cache_of("topk"), memory_budget=0)  # read row by row from the file
    first = cache.targets(3)
    clone = pickle.loads(pickle.dumps(cache))
    np.testing.assert_array_equal(clone.targets(3), first)
    assert clone.keys == cache.keys
