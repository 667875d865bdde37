"""Promises of the README and docs/ that had no test of their own: "a cache is data, never code"
(links, virtual or external storage, opaque types refused), `--compression lzf`, repeated
single-value options, `Cache.dataset(transform=...)`, and the merge refusals."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import softlabels
from softlabels import store
from softlabels.cli import main
from softlabels.views import Normalize
from trainer.cli import main as trainer_main


def one_line(result, code: int = 1) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == code and "Traceback" not in result.output, result.output
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[-1]


# ----------------------------------------------------------------------------- a cache is data, never code


def add_soft_link(file, tmp_path):
    file["extra"] = h5py.SoftLink("/labels")


def add_external_storage(file, tmp_path):
    (tmp_path / "outside.bin").write_bytes(bytes(64))
    file.create_dataset("extra", shape=(16,), dtype="f4", external=[(str(tmp_path / "outside.bin"), 0, 64)])


def add_virtual(file, tmp_path):
    layout = h5py.VirtualLayout(shape=(4,), dtype="i8")
    layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "data", shape=(4,))
    file.create_virtual_dataset("extra", layout)


def add_opaque(file, tmp_path):
    file.create_dataset("extra", data=np.void(b"\x80\x04pickled"))


@pytest.mark.parametrize(
    "damage, message",
    [
        (add_soft_link, "extra is a SoftLink"),
        (add_external_storage, "extra stores its data in external files"),
        (add_virtual, "extra is a virtual dataset"),
        (add_opaque, "extra has a non-numeric, non-string type"),
    ],
    ids=["soft link", "external storage", "virtual dataset", "opaque type"],
)
def test_a_cache_that_is_not_plain_data_is_refused(damage, message, cache_of, tmp_path):
    path = tmp_path / "cache.h5"
    shutil.copy(cache_of("full"), path)
    with h5py.File(path, "a") as file:
        damage(file, tmp_path)
    with pytest.raises(store.CacheError, match=f"is refused: {message}"):
        softlabels.open_cache(path)
    line = one_line(CliRunner().invoke(main, ["verify", str(path)]))
    assert message in line and "self-contained" in line


# ----------------------------------------------------------------------------- storage options


def test_lzf_compression_stores_the_same_targets(make_cache):
    plain, lzf = (
        make_cache("plain.h5", views=2, augment="flip"),
        make_cache("lzf.h5", views=2, augment="flip", compression="lzf"),
    )
    assert store.read_info(lzf).layout.compression == "lzf"
    with h5py.File(lzf, "r") as file:
        assert file["logits"].compression == "lzf"
    store.verify(lzf)
    a, b = store.CacheTargets(plain), store.CacheTargets(lzf)
    for i in range(len(a)):
        np.testing.assert_array_equal(a.logits(i), b.logits(i))
        np.testing.assert_array_equal(a.params(i), b.params(i))


# ----------------------------------------------------------------------------- command lines


@pytest.mark.parametrize(
    "command, option, values",
    [("fit", "--epochs", ("1", "2")), ("fit", "--temperature", ("2", "4")), ("sweep", "--epochs", ("1", "2"))],
)
def test_a_single_value_option_given_twice_is_refused_by_the_trainer(command, option, values, cache_of, tmp_path):
    args = [command, "--cache", str(cache_of("full")), "--student", "small_cnn", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(trainer_main, [*args, option, values[0], option, values[1]])
    assert f"{option} is given 2 times but takes one value" in one_line(result, code=2)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- Cache.dataset


def test_the_transform_argument_is_applied_last_to_each_input(cache_of, image_folder):
    cache = softlabels.open_cache(cache_of("multiview"))
    seen = []

    def transform(x):
        seen.append(x.clone())
        return x.flip(-2) * 2

    plain = cache.dataset(f"imagefolder:{image_folder}")
    transformed = cache.dataset(f"imagefolder:{image_folder}", transform=transform)
    normalize = Normalize(cache.info.input)
    for index, view in ((0, 0), (7, 1), (17, 1)):
        x, label, logits = transformed[(index, view, 0)]
        expected, expected_label, expected_logits = plain[(index, view, 0)]
        replayed = normalize(cache.replay(f"imagefolder:{image_folder}", index, view)[0][None])[0]
        assert torch.equal(seen[-1], replayed) and torch.equal(expected, replayed)  # given the normalised view
        assert torch.equal(x, replayed.flip(-2) * 2) and label == expected_label
        assert torch.equal(logits, expected_logits)  # targets untouched


# ----------------------------------------------------------------------------- merge refusals


def test_merge_refusals_name_the_cause(make_cache, tmp_path):
    plain = make_cache("plain.h5")
    flip0 = make_cache("flip0.h5", views=2, augment="flip")
    flip1 = make_cache("flip1.h5", views=2, augment="flip", seed=1)
    cifar1 = make_cache("cifar1.h5", views=2, augment="cifar", seed=1)
    topk1 = make_cache("topk1.h5", views=2, augment="flip", seed=1, topk=2)
    shard0 = make_cache("shard0.h5", shard=(0, 2))
    out = str(tmp_path / "merged.h5")

    def merge(*args):
        return one_line(CliRunner().invoke(main, ["merge", *map(str, args), "--out", out]))

    assert "has no augmentation: its views are the plain image" in merge("--kind", "views", plain, flip1)
    assert "differ in" in merge("--kind", "views", flip0, cifar1)
    assert "differ in" in merge("--kind", "views", flip0, topk1)
    assert "is a shard" in merge("--kind", "views", shard0, flip0)
    assert "missing shards" in merge("--kind", "rows", shard0)
    assert "did not see the same samples and views" in merge("--teachers", flip0, flip1)
    assert "give at least two caches" in merge("--teachers", flip0)
    assert not (tmp_path / "merged.h5").exists() and not list(tmp_path.glob("merged.h5*"))


# ----------------------------------------------------------------------------- content checks


TENSORS = """
import numpy as np


class Features:
    classes = ["a", "b", "c"]

    def __init__(self, changed):
        self.x = np.random.default_rng(0).normal(size=(9, 4))
        self.x[4] += changed  # the same key and label, other content
        self.targets = [i % 3 for i in range(9)]

    def __len__(self):
        return 9

    def __getitem__(self, i):
        return self.x[i], self.targets[i]


def features(split="train", root=None):
    return Features(0.0)


def changed(split="train", root=None):
    return Features(1e-6)
"""


def test_content_checks_name_a_changed_image_and_a_changed_tensor_sample(cache_of, image_folder, tmp_path):
    """README: with --check-content (ReplayDataset(check_content=True)) each sample read is compared
    with the digest the build stored: decoded tensor samples as well as image files."""
    from softlabels.build import BuildConfig, build_cache
    from softlabels.data import open_dataset
    from softlabels.data.sample_errors import SampleError
    from softlabels.replay import ReplayDataset

    path = cache_of("full")
    image = image_folder / "train" / "cat" / "0004.png"
    ReplayDataset(open_dataset(f"imagefolder:{image_folder}"), path, check_content=True)[4]  # unchanged: fine
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(image)
    data = ReplayDataset(open_dataset(f"imagefolder:{image_folder}"), path, check_content=True)
    with pytest.raises(SampleError, match="cat/0004.png.* changed since"):
        data[4]
    data[5]  # the others still read

    (tmp_path / "tensors.py").write_text(TENSORS)
    models = tmp_path / "models.py"
    models.write_text(
        "import torch\n\n\ndef linear(num_classes):\n    return torch.nn.Linear(4, num_classes, dtype=torch.float64)\n"
    )
    out = tmp_path / "tensors.h5"
    options = dict(teacher=f"{models}:linear", num_classes=3, workers=0, device="cpu", progress=False, out=str(out))
    build_cache(BuildConfig.from_options(dataset=f"{tmp_path / 'tensors.py'}:features", **options))
    changed = ReplayDataset(open_dataset(f"{tmp_path / 'tensors.py'}:changed"), out, check_content=True)
    changed[3]
    with pytest.raises(SampleError, match="changed since"):
        changed[4]
