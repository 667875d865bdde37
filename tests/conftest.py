"""Tiny real data for the whole suite: PNG image folders and small teacher checkpoints made on the fly."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Two cores: one intra-op thread keeps DataLoader workers and parallel tests from fighting.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLASSES = ("cat", "dog", "frog")


def make_image_folder(root: Path, per_class=(7, 5, 6), size=8, seed=0, splits=("train", "test")) -> Path:
    """root/<split>/<class>/<i>.png with deterministic random pixels (class-dependent colour bias)."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for label, (name, count) in enumerate(zip(CLASSES, per_class)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count if split == "train" else max(2, count // 2)):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                pixels[..., label] = np.clip(pixels[..., label].astype(int) + 90, 0, 255)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """An image folder with train/ (18 images) and test/ splits of 3 classes, 8x8 RGB."""
    return make_image_folder(tmp_path / "images")


@pytest.fixture
def teacher_weights(tmp_path) -> Path:
    """A small_cnn teacher for the tiny images, saved the way users save them (state_dict wrapper)."""
    from softlabels.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, in_channels=3, image_size=8)
    path = tmp_path / "teacher.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    return path


@pytest.fixture
def build_options(image_folder, teacher_weights, tmp_path) -> dict:
    """Options of a quick, deterministic build (float32 so results compare exactly)."""
    return dict(
        dataset=f"imagefolder:{image_folder}",
        teacher="small_cnn",
        weights=str(teacher_weights),
        out=str(tmp_path / "cache.h5"),
        batch_size=4,
        workers=0,
        dtype="float32",
        device="cpu",
        progress=False,
    )


@pytest.fixture
def make_images():
    """The image-folder maker, for tests that need other sizes or counts."""
    return make_image_folder


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """Background jobs (nohup, some CI runners) start with SIGINT ignored; the Ctrl-C tests need
    Python's usual KeyboardInterrupt, as in a terminal."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def shared():
    """../shared (real CIFAR-10 teachers); tests that need it skip where it is missing."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not available")
    return SHARED


def stored_spans(path, names) -> list[tuple[int, int]]:
    """(first byte, end) in the file of where each of these datasets stores its data: one span for a
    contiguous dataset, one per chunk for a chunked one."""
    import h5py

    spans = []
    with h5py.File(path, "r") as file:
        for name in names:
            dataset = file[name].id
            if file[name].chunks is None:
                spans.append((dataset.get_offset(), dataset.get_offset() + dataset.get_storage_size()))
                continue
            for i in range(dataset.get_num_chunks()):
                info = dataset.get_chunk_info(i)
                spans.append((info.byte_offset, info.byte_offset + info.size))
    return spans


def flip_stored_byte(path, name: str, row: int, byte: int) -> None:
    """XOR one byte of row `row` of an uncompressed dataset in the file (byte `byte` of the row)."""
    import h5py

    with h5py.File(path, "r") as file:
        dataset = file[name]
        row_bytes = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64))
        rows = dataset.chunks[0] if dataset.chunks else len(dataset)
        ((start, _), *_) = stored_spans(path, [name])[row // rows :]
    offset = start + (row % rows) * row_bytes + byte
    with open(path, "r+b") as handle:
        handle.seek(offset)
        value = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([value ^ 0x5A]))


@pytest.fixture
def spans():
    """`stored_spans(path, names)`: where datasets keep their bytes, for tests that damage them."""
    return stored_spans


@pytest.fixture
def flip_row_byte():
    """`flip_stored_byte(path, name, row, byte)`: damage one byte of one stored row."""
    return flip_stored_byte
