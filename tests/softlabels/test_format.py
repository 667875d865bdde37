"""The cache format: what a reader with plain h5py relies on, and what verify catches."""

import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from softlabels import store

ROOT = Path(__file__).parents[2]


def write_cache(
    path,
    n=10,
    views=1,
    classes=5,
    storage="logits",
    topk=None,
    block_rows=4,
    compression="none",
    seed=0,
    dtype="float16",
):
    layout = store.Layout(
        num_samples=n,
        num_classes=classes,
        num_views=views,
        storage=storage,
        topk=topk,
        block_rows=block_rows,
        compression=compression,
        dtype=dtype,
    )
    keys = [f"k{i}" for i in range(n)]
    labels = np.arange(n) % classes
    attrs = {
        "dataset": {
            "classes": [f"c{i}" for i in range(classes)],
            "fingerprint": store.dataset_fingerprint(keys, labels),
        }
    }
    writer = store.CacheWriter.create(path, layout, keys, labels, store.Metadata.from_attrs(attrs))
    logits = torch.randn(n, views, classes, generator=torch.Generator().manual_seed(seed)) * 3
    for start in range(0, n, 3):
        writer.write(store.Rows.encode(layout.mode, logits[start : start + 3]))
    writer.finish()
    return logits


def test_round_trip_through_plain_h5py(tmp_path):
    path = tmp_path / "c.h5"
    logits = write_cache(path, views=2)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "softlabels" and f.attrs["format_version"] == 1
        assert bool(f.attrs["complete"])
        assert list(f["keys"].asstr()[:]) == [f"k{i}" for i in range(10)]
        assert f["labels"].dtype == np.int64
        assert f["logits"].shape == (10, 2, 5) and f["logits"].dtype == np.float16
        np.testing.assert_allclose(f["logits"][:], logits.half().numpy())
        assert f["logits"].chunks[1:] == (2, 5)
    assert not store.partial_path(path).exists()


def test_float32_storage_is_exact(tmp_path):
    logits = write_cache(tmp_path / "c.h5", dtype="float32")
    targets = store.CacheTargets(tmp_path / "c.h5")
    np.testing.assert_array_equal(targets.logits(3, 0), logits[3, 0].numpy())


def test_format_doc_example_runs(tmp_path, monkeypatch):
    """The reading example in docs/FORMAT.md works as written and rebuilds what softlabels does, for
    every storage mode (a plain h5py reader needs nothing of ours)."""
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "FORMAT.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    for storage, topk in (("logits", None), ("topk", 2), ("quant8", None), ("quant8", 2)):
        write_cache(tmp_path / "cache.h5", storage=storage, topk=topk)
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("k0 c0")
        namespace: dict = {}
        exec(code, namespace)
        ours = np.stack([store.CacheTargets(tmp_path / "cache.h5").logits(i) for i in range(10)])
        np.testing.assert_allclose(namespace["logits"], ours, rtol=1e-6, atol=1e-6)
        os.remove(tmp_path / "cache.h5")


def test_topk_keeps_head_and_exact_tail_mass(tmp_path):
    logits = write_cache(tmp_path / "c.h5", storage="topk", topk=2, dtype="float32")
    targets = store.CacheTargets(tmp_path / "c.h5", memory_budget=0)
    assert not targets.in_memory
    dense = torch.from_numpy(targets.logits(0, 0))
    true = logits[0, 0]
    top = torch.topk(true, 2).indices
    torch.testing.assert_close(dense[top], true[top])
    p, q = torch.softmax(dense, 0), torch.softmax(true, 0)
    torch.testing.assert_close(p[top], q[top], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(p.sum(), torch.tensor(1.0))
    with h5py.File(tmp_path / "c.h5") as f:
        assert "logits" not in f and f["topk/indices"].dtype == np.uint8
        assert (np.diff(f["topk/values"][:], axis=-1) <= 0).all()


def test_index_dtype_is_smallest():
    assert store.index_dtype(10) == np.uint8 and store.index_dtype(256) == np.uint8
    assert store.index_dtype(257) == np.uint16 and store.index_dtype(1000) == np.uint16
    assert store.index_dtype(70000) == np.uint32


@pytest.mark.parametrize("k", [0, 6])
def test_topk_out_of_range(k):
    with pytest.raises(ValueError, match="between 1 and"):
        store.Layout(num_samples=3, num_classes=5, storage="topk", topk=k)


def test_compressed_cache_verifies(tmp_path):
    write_cache(tmp_path / "c.h5", n=40, compression="gzip")
    store.verify(tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["logits"].compression == "gzip"


def test_verify_detects_flipped_byte(tmp_path):
    path = tmp_path / "c.h5"
    write_cache(path, n=64, classes=50, block_rows=16, dtype="float32")
    with h5py.File(path, "r") as f:
        offset = f["logits"].id.get_offset()
    assert offset is None or offset > 0
    with h5py.File(path, "r") as f:  # chunked: find the file offset of the chunk holding row 40
        info = f["logits"].id.get_chunk_info_by_coord((40 // f["logits"].chunks[0] * f["logits"].chunks[0], 0, 0))
    data = bytearray(path.read_bytes())
    data[info.byte_offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(store.CacheError, match="checksum mismatch in block"):
        store.verify(path)


def test_verify_rejects_truncated_file(tmp_path):
    path = tmp_path / "c.h5"
    write_cache(path, n=64, classes=50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(store.CacheError):
        store.verify(path)


def test_incomplete_cache_is_refused(tmp_path):
    layout = store.Layout(num_samples=8, num_classes=3, block_rows=4)
    writer = store.CacheWriter.create(
        tmp_path / "c.h5", layout, [str(i) for i in range(8)], np.zeros(8), store.Metadata()
    )
    writer.write(store.Rows.encode(layout.mode, torch.randn(4, 1, 3)))
    writer.close()
    partial = store.partial_path(tmp_path / "c.h5")
    with pytest.raises(store.CacheError, match="incomplete"):
        store.verify(partial)
    with pytest.raises(FileNotFoundError, match="--resume"):
        store.verify(tmp_path / "c.h5")
    with pytest.raises(store.CacheError, match="incomplete"):
        store.CacheTargets(partial)


def test_writer_resumes_at_first_missing_block(tmp_path):
    layout = store.Layout(num_samples=10, num_classes=3, block_rows=4)
    logits = torch.randn(10, 1, 3)
    writer = store.CacheWriter.create(
        tmp_path / "c.h5", layout, [str(i) for i in range(10)], np.zeros(10), store.Metadata()
    )
    writer.write(store.Rows.encode(layout.mode, logits[:6]))  # block 0 done, rows 4-5 pending (lost)
    writer.close()
    writer = store.CacheWriter.resume(tmp_path / "c.h5")
    assert writer.done_rows == 4
    writer.write(store.Rows.encode(layout.mode, logits[4:]))
    writer.finish()
    np.testing.assert_array_equal(
        store.CacheTargets(tmp_path / "c.h5").logits(7, 0), logits[7, 0].half().float().numpy()
    )


def test_newer_major_version_is_refused(tmp_path):
    write_cache(tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f.attrs["format_version"] = store.FORMAT_VERSION + 1
    with pytest.raises(store.CacheError, match=f"version {store.FORMAT_VERSION + 1}.*upgrade"):
        store.read_info(tmp_path / "c.h5")


def test_not_a_cache(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(store.CacheError, match="not a softlabels cache"):
        store.verify(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(store.CacheError, match="not a readable HDF5"):
        store.verify(tmp_path / "text.h5")


def test_links_pointing_outside_are_refused(tmp_path):
    write_cache(tmp_path / "c.h5")
    with h5py.File(tmp_path / "elsewhere.h5", "w") as f:
        f["data"] = np.zeros(3)
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        f["extra"] = h5py.ExternalLink("elsewhere.h5", "data")
    with pytest.raises(store.CacheError, match="ExternalLink"):
        store.read_info(tmp_path / "c.h5")


def test_virtual_datasets_are_refused(tmp_path):
    write_cache(tmp_path / "c.h5")
    with h5py.File(tmp_path / "src.h5", "w") as f:
        f["data"] = np.zeros(3)
    with h5py.File(tmp_path / "c.h5", "r+") as f:
        layout = h5py.VirtualLayout(shape=(3,), dtype=np.float64)
        layout[:] = h5py.VirtualSource(tmp_path / "src.h5", "data", shape=(3,))
        f.create_virtual_dataset("virtual", layout)
    with pytest.raises(store.CacheError, match="virtual dataset"):
        store.read_info(tmp_path / "c.h5")


def test_non_finite_outputs_name_rows():
    layout = store.Layout(num_samples=4, num_classes=3)
    logits = torch.zeros(4, 1, 3)
    logits[2, 0, 1] = float("nan")
    with pytest.raises(store.NonFiniteOutputs) as err:
        store.Rows.encode(layout.mode, logits)
    assert err.value.rows == [2]
    logits = torch.zeros(4, 1, 3)
    logits[1, 0, 0] = 1e6  # finite in float32, infinite in float16
    with pytest.raises(store.NonFiniteOutputs):
        store.Rows.encode(layout.mode, logits)


def test_targets_pickle_without_handle(tmp_path):
    import pickle

    write_cache(tmp_path / "c.h5")
    targets = store.CacheTargets(tmp_path / "c.h5", memory_budget=0)
    first = targets.logits(1)
    clone = pickle.loads(pickle.dumps(targets))
    np.testing.assert_array_equal(clone.logits(1), first)
    targets.close()


@pytest.mark.parametrize("topk", [None, 3])
def test_quant8_keeps_logits_within_half_a_step(tmp_path, topk):
    logits = write_cache(tmp_path / "c.h5", n=10, views=2, classes=7, storage="quant8", topk=topk)
    store.verify(tmp_path / "c.h5")
    targets = store.CacheTargets(tmp_path / "c.h5")
    assert targets.layout.bytes_per_view == (7 + 4 if topk is None else 3 + 2 + 8)  # 3 classes x 3 bits = 2 bytes
    for index in range(10):
        dense, true = targets.logits(index), logits[index].numpy()
        kept = np.argsort(-true, axis=-1)[..., : topk or 7]
        step = targets.rows(index).targets["quant8/scale"][..., 1].astype(np.float32)  # the stored step
        assert (step <= (true.max(-1) - np.take_along_axis(true, kept, -1).min(-1)) / 255 * 1.001 + 2**-14).all()
        error = np.abs(np.take_along_axis(dense, kept, -1) - np.take_along_axis(true, kept, -1)).max(-1)
        assert (error <= step / 2 * (1 + 1e-3) + 1e-6).all()  # half a step, as docs/FORMAT.md says
        assert (dense.argmax(-1) == true.argmax(-1)).all()


def test_bit_packed_indices_round_trip():
    from softlabels.store.modes.quant8 import pack_indices, unpack_indices

    rng = np.random.default_rng(0)
    for classes, k in ((1000, 14), (10, 10), (70000, 5), (2, 1)):
        bits = max(1, int(np.ceil(np.log2(classes))))
        indices = rng.integers(0, classes, (4, 3, k))
        packed = pack_indices(indices, bits)
        assert packed.shape == (4, 3, -(-k * bits // 8)) and packed.dtype == np.uint8
        np.testing.assert_array_equal(unpack_indices(packed, k, bits), indices)


def test_the_dataset_fingerprint_is_the_documented_digest():
    """docs/FORMAT.md: sha256 over `key TAB label NEWLINE` of every sample, in order (computed here by hand)."""
    import hashlib

    expected = "sha256:" + hashlib.sha256(b"cat/0.png\t0\ndog/1.png\t1\n").hexdigest()
    assert store.dataset_fingerprint(["cat/0.png", "dog/1.png"], [0, 1]) == expected
    assert store.dataset_fingerprint(["cat/0.png", "dog/1.png"], [0, 2]) != expected  # a relabel shows
