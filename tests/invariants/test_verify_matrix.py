"""Promise (e): `softlabels verify` passes a good cache (file, samples, content and a recompute of
every sample by its teachers) and fails a damaged one with one line naming what is wrong.

Damage kinds: `none`; `byte` (one stored target byte flipped: a block checksum); `teacher` (the
recompute given other weights); `content` (one sample's content changed, same key and label: the
content digests). Cells: `pairwise` over storage, augment, sample kind, teachers, damage, the target
kinds stored (logits, embeddings or both: a recompute compares embeddings by cosine) and labelled or
unlabelled data.
"""

from __future__ import annotations

import shutil
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from softlabels import store
from softlabels.cli import main
from tests.conftest import flip_stored_byte
from tests.invariants.world import DATA, IMAGE_AUGMENTS, SAMPLES, STORAGES, Kind, pairwise

AXES = {
    "storage": STORAGES,
    "augment": IMAGE_AUGMENTS,
    "sample": SAMPLES,
    "teachers": (1, 2),
    "damage": ("none", "byte", "teacher", "content"),
    "targets": ("logits", "logits,embedding", "embedding"),
    "labels": ("labelled", "unlabelled"),
}
TARGETS = {"logits": "logits", "topk": "topk/values", "quant8": "quant8/values"}
EMBEDDINGS = "embeddings/values"


def allowed(cell: dict) -> bool:
    if cell["sample"] == "dict" and cell["augment"] != "none":
        return False
    if cell["sample"] == "tensor" and cell["augment"] not in ("none", "user"):
        return False
    if cell["targets"] == "embedding" and cell["storage"] != "logits":
        return False  # no logits stored: the storage mode has nothing to store
    return not (cell["damage"] == "teacher" and cell["teachers"] > 1)  # --weights names one teacher


CELLS = pairwise(AXES, allowed)


def cell_id(cell: dict) -> str:
    return "-".join(str(cell[axis]) for axis in AXES)


@pytest.mark.parametrize("cell", [pytest.param(c, id=cell_id(c)) for c in CELLS])
def test_verify_passes_a_good_cache_and_fails_a_damaged_one(cell, world, cache_for, tmp_path):
    labelled = cell["labels"] == "labelled"
    kind = Kind(cell["sample"], cell["augment"], cell["storage"], cell["teachers"], cell["targets"], labelled)
    path = tmp_path / "cache.h5"
    shutil.copy(cache_for(kind), path)
    dataset = world.dataset(kind.sample, labelled)
    args = ["verify", str(path), "--dataset", dataset, "--device", "cpu", "--no-progress"]
    if cell["damage"] != "content":
        args += ["--recompute", "18"]
    expected = None
    if cell["damage"] == "byte":
        damaged = EMBEDDINGS if kind.targets == "embedding" else TARGETS[kind.storage]
        flip_stored_byte(path, damaged, row=7 if labelled else 4, byte=1)  # the unlabelled cache holds 6
        expected = "checksum"
    elif cell["damage"] == "teacher":
        args += ["--weights", world.teachers(kind.sample, 2)[1][1]]
        expected = "differ"
    elif cell["damage"] == "content":
        args[3] = changed_copy(world, kind.sample, labelled, tmp_path)
        expected = "changed"
    result = CliRunner().invoke(main, args)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    if expected is None:
        assert result.exit_code == 0, result.output
        assert all(line.startswith("ok: ") for line in lines) and len(lines) == 4, result.output
        return
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert lines[-1].startswith("error: ") and expected in lines[-1].lower(), result.output


def changed_copy(world, sample: str, labelled: bool, tmp_path) -> str:
    """A copy of the sample kind's dataset, the same keys and labels, sample 4's content changed."""
    if sample in ("rgb", "grey"):
        name = sample if labelled else f"{sample}-bare"
        folder = tmp_path / name
        shutil.copytree(world.root / name, folder)
        image = folder / ("train/cat/0004.png" if labelled else "2000.png")  # sample 4 of either
        pixels = np.asarray(Image.open(image)).copy()
        pixels.flat[0] ^= 1
        Image.fromarray(pixels).save(image)
        return f"imagefolder:{folder}"
    code = textwrap.dedent(DATA) + textwrap.dedent(
        """
        _load_features, _load_tokens = Features.__getitem__, Tokens.__getitem__
        Features.__getitem__ = lambda self, i: (_load_features(self, i)[0] + (i == 4), self.targets[i])
        Tokens.__getitem__ = lambda self, i: (
            {**_load_tokens(self, i)[0], "input_ids": self.ids[i] + (i == 4)}, self.targets[i]
        )
        """
    )
    (tmp_path / "changed.py").write_text(code)
    name = "features" if sample == "tensor" else "tokens"
    return f"{tmp_path / 'changed.py'}:{name if labelled else name + '_bare'}"


def test_the_byte_damage_lands_in_the_targets(world, cache_for, tmp_path):
    """The `byte` cells damage stored targets, not padding: the reader refuses the block too."""
    path = tmp_path / "cache.h5"
    shutil.copy(cache_for(Kind("rgb", "none", "quant8")), path)
    flip_stored_byte(path, TARGETS["quant8"], row=7, byte=1)
    with pytest.raises(store.CacheError, match="checksum"):
        store.CacheTargets(path)
