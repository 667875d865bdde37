"""Dataset specs: every sample keeps its key, label and order; missing data fails with a fix."""

import gzip
import json
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from softlabels.data import DATASET_NAMES, builtin, eval_spec_for, open_dataset
from softlabels.data.sources import sample_digest
from softlabels.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx_gz(path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0x08 = ubyte, number of dims), big-endian dims, raw bytes."""
    magic = 0x0800 + array.ndim  # 2051 for images, 2049 for labels
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    """Tiny Fashion-MNIST .gz files laid out like Debian's package: 12 train and 5 test 28x28 images."""
    folder = tmp_path / "debian-fashion"
    folder.mkdir()
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 12), ("test", 5)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        write_idx_gz(folder / f"{FASHION_FILES[split][0]}.gz", images)
        write_idx_gz(folder / f"{FASHION_FILES[split][1]}.gz", labels)
        arrays[split] = images, labels
    monkeypatch.setenv(builtin.FASHION_MNIST_ENV, str(folder))
    return arrays


FACTORY = """
import torch
from torch.utils.data import Dataset

class Tiny(Dataset):
    def __init__(self, split, root, n, with_attrs):
        self.n, self.offset = n, 100 if split == "test" else 0
        self.root = root
        if with_attrs:
            self.targets = [i % 3 for i in range(n)]
            self.classes = ["a", "b", "c", "d"]
            self.keys = [f"s{self.offset + i:03d}" for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        image = torch.full((3, 5, 6), (self.offset + i) / 255.0)
        return image, i % 3

def make(split, root):
    return Tiny(split, root, 7, with_attrs=True)

def bare(split, root):
    return Tiny(split, root, 4, with_attrs=False)
"""


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "mydata.py"
    path.write_text(textwrap.dedent(FACTORY))
    return path


# --- image folders -------------------------------------------------------------------------------


def test_image_folder_keys_labels_and_order(image_folder):
    source = open_dataset(f"imagefolder:{image_folder}")
    assert source.classes == ["cat", "dog", "frog"]
    assert source.keys[:2] == ["cat/0000.png", "cat/0001.png"] and source.keys[-1] == "frog/0005.png"
    assert source.keys == sorted(source.keys)
    np.testing.assert_array_equal(source.labels, [0] * 7 + [1] * 5 + [2] * 6)
    assert source.labels.dtype == np.int64 and len(source) == 18
    assert source.root == str((image_folder / "train").resolve()) and source.split == "train"
    assert source.defaults == {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "image_size": 8}
    image = source.load(7)
    assert image.mode == "RGB" and image.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(image_folder / "train/dog/0000.png")))


def test_image_folder_split_selection(image_folder, make_images, tmp_path):
    test = open_dataset(f"imagefolder:{image_folder}", split="test")
    assert test.root.endswith("test") and test.keys[0] == "cat/0000.png" and len(test) == 3 + 2 + 3
    flat = make_images(tmp_path / "flat", splits=("",))
    source = open_dataset(f"imagefolder:{flat}", split="train")
    assert source.classes == ["cat", "dog", "frog"] and source.root == str(flat.resolve())
    with pytest.raises(ValueError, match="no 'val' split folder; it has: train, test"):
        open_dataset(f"imagefolder:{image_folder}", split="val")


def test_grey_image_folder_stays_grey(tmp_path):
    for name in ("zero", "one"):
        (tmp_path / "grey" / name).mkdir(parents=True)
        Image.fromarray(np.full((6, 10), 40, np.uint8)).save(tmp_path / "grey" / name / "a.png")
    (tmp_path / "grey" / "one" / "notes.txt").write_text("not an image")
    source = open_dataset(f"imagefolder:{tmp_path / 'grey'}")
    assert source.keys == ["one/a.png", "zero/a.png"]
    assert source.load(0).mode == "L" and len(source.defaults["mean"]) == 1
    assert source.defaults["image_size"] == 6


def test_image_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()  # no class folders and no images (images alone: an unlabelled dataset)
    with pytest.raises(
        FileNotFoundError, match="no images .* expected .*/<class>/<image>, or .*/<image> for unlabelled"
    ):
        open_dataset(f"imagefolder:{tmp_path / 'empty'}")
    (tmp_path / "hollow" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no valid file for the classes cat"):
        open_dataset(f"imagefolder:{tmp_path / 'hollow'}")


# --- specs and built-ins -------------------------------------------------------------------------


def test_unknown_spec_lists_every_form(image_folder):
    with pytest.raises(ValueError) as err:
        open_dataset("cifar-10")
    assert str(err.value) == (
        "unknown dataset 'cifar-10'; choose one of: cifar10, cifar100, mnist, "
        "fashion-mnist, imagefolder:PATH, FILE.py:FUNC"
    )
    with pytest.raises(ValueError, match="did you mean imagefolder:"):
        open_dataset(str(image_folder))


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_missing_builtin_says_where_and_how(name, tmp_path, monkeypatch):
    monkeypatch.setenv(builtin.FASHION_MNIST_ENV, str(tmp_path / "no-debian"))
    with pytest.raises(FileNotFoundError) as err:
        open_dataset(name, root=tmp_path / "data")
    message = str(err.value)
    assert str(tmp_path / "data") in message and "pass --download where a network exists" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")


def test_builtin_splits_are_checked(tmp_path):
    with pytest.raises(ValueError, match="splits train, test; got split 'val'"):
        open_dataset("mnist", split="val", root=tmp_path)


def test_fashion_mnist_from_debian_files(fake_fashion, tmp_path):
    root = tmp_path / "data"
    for split, (images, labels) in fake_fashion.items():
        source = open_dataset("fashion-mnist", split=split, root=root)
        assert source.keys == [str(i) for i in range(len(labels))]
        np.testing.assert_array_equal(source.labels, labels)
        assert source.labels.dtype == np.int64
        assert source.classes[0] == "T-shirt/top" and len(source.classes) == 10
        assert source.defaults == {"mean": (0.2860,), "std": (0.3530,), "image_size": 28}
        image = source.load(2)
        assert image.mode == "L"
        np.testing.assert_array_equal(np.asarray(image), images[2])
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(builtin.FASHION_MNIST_FILES)  # no temp files left
    assert source.root == str(raw.resolve())


def test_fashion_mnist_is_not_unpacked_twice(fake_fashion, tmp_path):
    assert builtin.unpack_debian_fashion_mnist(tmp_path)
    assert not builtin.unpack_debian_fashion_mnist(tmp_path)


# --- user factories ------------------------------------------------------------------------------


def test_factory_uses_keys_targets_and_classes(factory_file, tmp_path):
    source = open_dataset(f"{factory_file}:make", split="test", root=tmp_path / "r")
    assert source.keys == [f"s{100 + i:03d}" for i in range(7)]
    np.testing.assert_array_equal(source.labels, [0, 1, 2, 0, 1, 2, 0])
    assert source.classes == ["a", "b", "c", "d"]
    assert source.root == str((tmp_path / "r").resolve())
    image = source.load(3)  # a [0, 1] tensor comes back as the 8-bit image it encodes
    assert image.mode == "RGB" and image.size == (6, 5) and np.asarray(image).max() == 103


def test_factory_without_attributes_falls_back_to_index(factory_file):
    source = open_dataset(f"{factory_file}:bare")
    assert source.keys == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(source.labels, [0, 1, 2, 0])
    assert source.classes == ["0", "1", "2"]


def test_factory_errors(factory_file, tmp_path):
    with pytest.raises(ValueError, match="has no function 'nope'"):
        open_dataset(f"{factory_file}:nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset(f"{tmp_path / 'missing.py'}:make")


# --- what crosses into workers -------------------------------------------------------------------


def test_sources_pickle_without_their_data(image_folder, factory_file, fake_fashion, tmp_path):
    sources = [
        open_dataset(f"imagefolder:{image_folder}"),
        open_dataset(f"{factory_file}:make"),
        open_dataset("fashion-mnist", root=tmp_path / "data"),
    ]
    for source in sources:
        data = pickle.dumps(source)
        assert len(data) < 4000
        again = pickle.loads(data)
        assert again.keys == source.keys and again.classes == source.classes
        np.testing.assert_array_equal(again.labels, source.labels)
        np.testing.assert_array_equal(np.asarray(again.load(1)), np.asarray(source.load(1)))


def test_factory_source_loads_in_a_fresh_interpreter(factory_file):
    """What the `spawn` start method does: unpickle in a new process that never imported the file."""
    source = open_dataset(f"{factory_file}:make")
    code = "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); print(s.load(4).getpixel((0, 0)))"
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(source), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "(4, 4, 4)"


def test_describe_is_json(image_folder):
    described = open_dataset(f"imagefolder:{image_folder}", split="test").describe()
    assert json.loads(json.dumps(described)) == described
    assert described["num_samples"] == 8 and described["split"] == "test"
    assert described["classes"] == ["cat", "dog", "frog"]


def test_eval_spec_for(image_folder, make_images, factory_file, tmp_path):
    assert eval_spec_for("cifar10", "data") == ("cifar10", "test")
    assert eval_spec_for(f"imagefolder:{image_folder}", "data") == (f"imagefolder:{image_folder}", "test")
    flat = make_images(tmp_path / "flat", splits=("",))
    assert eval_spec_for(f"imagefolder:{flat}", "data") is None
    assert eval_spec_for(f"{factory_file}:make", "data") == (f"{factory_file}:make", "test")
    with pytest.raises(ValueError, match="unknown dataset"):
        eval_spec_for("imagenet", "data")


# --- content digests (issue 16) ------------------------------------------------------------------


def test_digests_hash_file_bytes_of_folders_and_pixels_of_decoded_samples(image_folder, factory_file, fake_fashion):
    import hashlib

    folder = open_dataset(f"imagefolder:{image_folder}")
    assert folder.digest_source == "file bytes"
    for i in (0, 7):
        path = image_folder / "train" / folder.keys[i]
        expected = hashlib.sha256(path.read_bytes()).digest()
        image, digest = folder.read(i)
        assert digest == folder.digest(i) == expected
        assert image.tobytes() == folder.load(i).tobytes()  # decoded once from the same bytes
    assert folder.where(3) == f"sample cat/0003.png ({image_folder / 'train' / 'cat' / '0003.png'})"
    for spec in (f"{factory_file}:make", "fashion-mnist"):
        source = open_dataset(spec, "train", image_folder.parent)
        image, digest = source.read(2)
        assert source.digest_source == "decoded samples"
        assert digest == sample_digest(source.load(2)) == source.digest(2)
        assert digest != source.digest(3)


def test_a_build_stores_each_samples_digest_and_verify_guards_them(build_options, image_folder, tmp_path):
    import hashlib

    import h5py

    from softlabels import store
    from softlabels.build import BuildConfig, build_cache

    path = build_cache(BuildConfig.from_options(**build_options)).path
    keys, _ = store.read_keys_labels(path)
    stored = store.read_digests(path)
    expected = [hashlib.sha256((image_folder / "train" / key).read_bytes()).digest() for key in keys]
    assert [bytes(d) for d in stored] == expected
    assert store.read_info(path).dataset.digests == "sha256 of file bytes"
    with h5py.File(path, "r+") as file:  # a flipped bit in a digest is damage like any other
        file["samples/sha256"][4, 0] ^= 1
    with pytest.raises(store.CacheError, match=r"sample digests mismatch in block 0"):
        store.verify(path)
