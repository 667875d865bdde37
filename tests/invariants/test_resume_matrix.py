"""Promise (b): a run stopped by a signal at any step and resumed ends with the weights (and the
optimiser state) of a run never stopped, bit for bit.

The stop lands at a step drawn from a seeded generator per cell (a different one in each cell),
through the same flag the SIGTERM handler sets (`run.stop.signal`), anywhere in the 2-epoch run.
Cells: `pairwise` over sample kind, augment (one view, replayed views, mixed views), views per decode,
teachers, loader workers, the loss (KD, hard, labels alone, a teacher's embeddings through a trained
projection, KD plus a relational term), labelled or unlabelled caches, and the caches trained (one, or
a labelled and an unlabelled cache of the same teachers as one set), minus combinations that cannot
exist. A projection, where the loss trains one, resumes bit for bit too.
"""

from __future__ import annotations

import random
import signal

import pytest
import torch

from softlabels import store
from softlabels.stopping import Stopped
from tests.invariants.world import Kind, pairwise
from trainer import FitConfig, Hook, fit

AXES = {
    "sample": ("rgb", "grey", "tensor"),
    "augment": ("none", "cifar", "cifar+mixup"),
    "per_decode": (1, 2),
    "teachers": ("one", "two:mean-prob", "two:teacher:1"),
    "workers": (0, 2),
    "loss": ("kd", "hard", "ce", "embed-cosine", "kd+embed-relational"),
    "labels": ("labelled", "unlabelled"),
    "caches": ("one", "labelled+unlabelled"),
}
EMBEDDING_LOSSES = ("embed-cosine", "kd+embed-relational")  # need a cache with embeddings


def allowed(cell: dict) -> bool:
    if cell["sample"] == "tensor" and cell["augment"] != "none":
        return False
    if cell["per_decode"] == 2 and cell["augment"] == "none":
        return False
    if cell["augment"] == "cifar+mixup" and cell["loss"] not in ("hard", "embed-cosine"):
        return False  # mixed views have no single label: a loss without a label term
    if cell["loss"] == "ce" and (cell["teachers"] != "one" or cell["labels"] == "unlabelled"):
        return False  # labels alone: one teacher's cache is enough, and an unlabelled one is refused
    if cell["caches"] != "one" and cell["labels"] == "unlabelled":
        return False  # the combined set is a labelled cache and its unlabelled partner
    # embeddings are never mixed: a cache of several teachers teaches the one --ensemble picks
    return not (cell["loss"] in EMBEDDING_LOSSES and cell["teachers"] == "two:mean-prob")


CELLS = pairwise(AXES, allowed)


def cell_id(cell: dict) -> str:
    return "-".join(str(cell[axis]) for axis in AXES)


class StopAt(Hook):
    """Sets the stop flag after global step `step`, as the SIGTERM handler would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, run, step, loss):
        if step == self.step:
            run.stop.signal = signal.SIGTERM


@pytest.mark.parametrize("cell", [pytest.param(c, id=cell_id(c)) for c in CELLS])
def test_a_run_resumed_after_a_stop_at_a_random_step_has_the_uninterrupted_weights(cell, world, cache_for, tmp_path):
    targets = "logits,embedding" if cell["loss"] in EMBEDDING_LOSSES else "logits"
    labelled = cell["labels"] == "labelled"
    kind = Kind(cell["sample"], cell["augment"], "logits", 1 if cell["teachers"] == "one" else 2, targets, labelled)
    caches = [cache_for(kind)] + ([cache_for(kind.bare)] if cell["caches"] != "one" else [])
    options = dict(
        cache=tuple(map(str, caches)),
        student=world.teachers(kind.sample)[0][0],
        epochs=2,
        batch_size=4,
        views_per_decode=cell["per_decode"],
        workers=cell["workers"],
        loss=cell["loss"],
        ensemble=None if cell["teachers"] == "one" else cell["teachers"].split(":", 1)[1],
        optimizer="adamw",
        seed=1,
        device="cpu",
        eval_dataset="none",
        progress=False,
        **({} if labelled else {"alpha": 1.0}),  # no label term without labels
    )
    fit(FitConfig.from_options(**options, out=str(tmp_path / "ref")))
    samples = sum(store.read_info(cache).layout.num_samples for cache in caches)
    steps = 2 * -(-samples // (4 // cell["per_decode"]))  # 2 epochs, 4 // R samples a batch
    stop = random.Random(cell_id(cell)).randrange(0, steps - 1)  # any step but the last
    with pytest.raises(Stopped):
        fit(FitConfig.from_options(**options, out=str(tmp_path / "run")), hooks=[StopAt(stop)])
    fit(FitConfig.from_options(**options, out=str(tmp_path / "run"), resume=True))
    reference, resumed = (torch.load(tmp_path / run / "last.pt", weights_only=False) for run in ("ref", "run"))
    assert_equal(reference["model"], resumed["model"], f"weights, after a stop at step {stop} of {steps}")
    assert_equal(reference["optimizer"], resumed["optimizer"], f"optimiser state, after a stop at step {stop}")
    assert_equal(reference.get("projection"), resumed.get("projection"), f"projection, after a stop at step {stop}")


def assert_equal(a, b, what: str) -> None:
    """Nested dicts/lists of tensors and numbers, equal exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for key in a:
            assert_equal(a[key], b[key], f"{what}: {key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), what
        for x, y in zip(a, b):
            assert_equal(x, y, what)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{what} differs"
    else:
        assert a == b, what
