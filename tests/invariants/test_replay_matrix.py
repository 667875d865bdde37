"""Promise (a): a stored view replays exactly wherever it is read, by pixels AND targets.

Each cell reads one cache through one reader and checks every served item three ways:
- pixels: equal (bit for bit) to the view recomputed here from the STORED parameters with a pipeline
  made from the augmentation's spec (not from the cache's record), for the view the schedule names;
- targets: equal to the stored row of THAT view (several teachers: mixed here by hand, at T);
- teacher: the teacher run on the served pixels gives the stored row (within the storage mode's
  documented error), so a reader serving consistent pixels and targets of the wrong sample fails too;
and every (sample, view) is served exactly once per V / views-per-decode epochs.

Caches of embeddings (`--targets`) are checked the same way: the stored embedding of the served view
is what a plain forward hook reads on the teacher's last nn.Linear; unlabelled caches serve the label
-1 for every sample.

Cells: `pairwise` over the axes below (every pair of values of two axes in at least one cell), minus
the combinations that cannot exist (built-in augmentations on tensor/dict samples; views-per-decode 2
on one-view caches or through `Cache.replay`; weighted ensembles only where an ensemble is chosen;
embeddings alone with several teachers or other storage modes, or read by the trainer's logit loss;
a labelled and an unlabelled cache trained as one set only through the trainer, which checks each
served item against the cache that holds it).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import softlabels
from softlabels import store
from softlabels.models.teachers import load_teacher
from softlabels.replay import ViewSchedule
from softlabels.runtime import current_rank
from softlabels.stopping import StopRequest
from softlabels.views import Normalize, ViewPipeline, parse_augment
from tests.invariants.world import IMAGE_AUGMENTS, SAMPLES, STORAGES, Kind, pairwise

AXES = {
    "sample": SAMPLES,
    "augment": IMAGE_AUGMENTS,
    "storage": STORAGES,
    "teachers": ("one", "two:mean-prob", "two:0.7,0.3"),
    "per_decode": (1, 2),
    "reader": ("Cache.replay", "set_epoch", "sampler", "trainer"),
    "workers": (0, 2),
    "targets": ("logits", "logits,embedding", "embedding"),
    "labels": ("labelled", "unlabelled"),
    "caches": ("one", "labelled+unlabelled"),
}
SEED = 3  # the readers' schedule seed (the build's view seed is another: world.build_options)


def allowed(cell: dict) -> bool:
    if cell["sample"] == "dict" and cell["augment"] != "none":
        return False
    if cell["sample"] == "tensor" and cell["augment"] not in ("none", "user"):
        return False
    if cell["per_decode"] == 2 and (cell["augment"] == "none" or cell["reader"] in ("Cache.replay", "set_epoch")):
        return False
    if cell["reader"] == "Cache.replay" and cell["workers"]:
        return False
    if cell["targets"] == "embedding" and (
        cell["teachers"] != "one" or cell["storage"] != "logits" or cell["reader"] == "trainer"
    ):
        return False  # embeddings alone: no logits to store or mix; the trainer reads them through embed-* losses
    if cell["caches"] != "one" and cell["reader"] != "trainer":
        return False  # `trainer fit --cache L --cache U`: the API reads one cache
    if cell["caches"] != "one" and cell["labels"] == "unlabelled":
        return False  # the combined set is a labelled cache and its unlabelled partner
    # Cache.dataset mixes several teachers by mean-prob; weights are chosen by ReplayDataset / the trainer
    return not (cell["teachers"] == "two:0.7,0.3" and cell["reader"] in ("Cache.replay", "set_epoch"))


CELLS = pairwise(AXES, allowed)


def cell_id(cell: dict) -> str:
    return "-".join(str(cell[axis]) for axis in AXES)


@pytest.mark.parametrize("cell", [pytest.param(c, id=cell_id(c)) for c in CELLS])
def test_a_served_view_is_the_stored_view(cell, world, cache_for, tmp_path):
    kind = Kind(
        cell["sample"],
        cell["augment"],
        cell["storage"],
        1 if cell["teachers"] == "one" else 2,
        cell["targets"],
        cell["labels"] == "labelled",
    )
    parts = [kind] + ([kind.bare] if cell["caches"] != "one" else [])
    paths = [cache_for(part) for part in parts]
    served = READERS[cell["reader"]](paths, world, kind, cell, tmp_path)
    start = 0  # the combined set numbers its samples cache after cache
    for part, path in zip(parts, paths):
        size = store.read_info(path).layout.num_samples
        mine = [(i - start, *rest) for i, *rest in served if start <= i < start + size]
        check_served(path, world, part, cell, mine)
        start += size
    assert all(0 <= i < start for i, *_ in served), "an index outside the caches was served"


# ----------------------------------------------------------------------------- readers
# Each returns [(index, view, input as served (un-normalised), label, logits as served)].


def read_replay(paths, world, kind, cell, tmp_path):
    path = paths[0]
    cache = softlabels.open_cache(path)
    source = softlabels.open_dataset(world.dataset(kind.sample, kind.labelled))
    return [(i, v, *cache.replay(source, i, view=v)) for i in range(len(cache)) for v in range(kind.views)]


def read_set_epoch(paths, world, kind, cell, tmp_path):
    """The README's own loop: Cache.dataset, DataLoader(shuffle), set_epoch each epoch."""
    path = paths[0]
    cache = softlabels.open_cache(path)
    data = cache.dataset(softlabels.open_dataset(world.dataset(kind.sample, kind.labelled)), normalize=False, seed=SEED)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1)).tolist()
    loader = DataLoader(data, batch_size=4, sampler=order, **workers(cell))
    schedule = ViewSchedule(len(data), kind.views, SEED)
    served = []
    for epoch in range(kind.views):
        data.set_epoch(epoch)
        items = [(i, schedule.view(i, epoch)) for i in order]
        served += zip_items(items, loader, per_decode=1)
    return served


def read_sampler(paths, world, kind, cell, tmp_path):
    """Cache.dataset with its own sampler (views travel in the indices), optionally R views per decode."""
    path = paths[0]
    cache = softlabels.open_cache(path)
    source = softlabels.open_dataset(world.dataset(kind.sample, kind.labelled))
    if cell["teachers"] == "two:0.7,0.3":
        data = softlabels.replay.ReplayDataset(source, path, seed=SEED, ensemble="0.7,0.3")
    else:
        data = cache.dataset(source, normalize=False, seed=SEED)
    sampler = data.sampler(per_decode=cell["per_decode"])
    loader = DataLoader(data, batch_size=4, sampler=sampler, **workers(cell))
    served = []
    for epoch in range(kind.views // cell["per_decode"]):
        sampler.set_epoch(epoch)
        served += zip_items([(i, v) for i, v, _ in sampler], loader, cell["per_decode"])
    return served


def read_trainer(paths, world, kind, cell, tmp_path):
    """What `trainer fit` trains on: the loader `build_run` makes from the options (from one cache, or a
    labelled and an unlabelled one as one set)."""
    from trainer import FitConfig
    from trainer.setup import build_run

    ensemble = None if cell["teachers"] == "one" else cell["teachers"].split(":")[1]
    config = FitConfig.from_options(
        cache=tuple(map(str, paths)),
        student=world.teachers(kind.sample)[0][0],
        out=str(tmp_path / "run"),
        batch_size=4,
        workers=cell["workers"],
        views_per_decode=cell["per_decode"],
        ensemble=ensemble,
        temperature=2.0,
        alpha=1.0,
        seed=SEED,
        device="cpu",
        eval_dataset="none",
        progress=False,
    )
    run = build_run(config, current_rank(), torch.device("cpu"), StopRequest())
    try:
        served = []
        for epoch in range(kind.views // cell["per_decode"]):
            run.sampler.set_epoch(epoch)
            served += zip_items([(i, v) for i, v, _ in run.sampler], run.train_loader, cell["per_decode"])
        return served
    finally:
        run.close()


READERS = {"Cache.replay": read_replay, "set_epoch": read_set_epoch, "sampler": read_sampler, "trainer": read_trainer}


def workers(cell) -> dict:
    return {"num_workers": cell["workers"], "persistent_workers": cell["workers"] > 0}


def zip_items(items, loader, per_decode: int) -> list:
    """Pair the indices a loader was given, in order, with the items it served (batches unbatched)."""
    served = []
    for x, labels, logits in loader:
        for row in range(len(labels)):
            for r in range(per_decode):
                pick = (row, r) if per_decode > 1 else (row,)
                served.append((take(x, pick), int(labels[pick]), logits[pick]))
    flat = [(i, v) for i, views in items for v in (views if per_decode > 1 else (views,))]
    assert len(flat) == len(served), f"{len(served)} items served for {len(flat)} indices"
    return [(i, v, *item) for (i, v), item in zip(flat, served)]


def take(x, pick):
    return {k: take(v, pick) for k, v in x.items()} if isinstance(x, dict) else x[pick]


# ----------------------------------------------------------------------------- the checks


def check_served(path, world, kind, cell, served) -> None:
    targets = store.CacheTargets(path)
    source = softlabels.open_dataset(world.dataset(kind.sample, kind.labelled))
    pipeline = ViewPipeline(targets.info.input, parse_augment(world.augment(kind.augment)), source)
    normalize = Normalize(targets.info.input)
    teachers = [
        load_teacher(spec, weights, num_classes=3, recorded=targets.info.input).model
        for spec, weights in world.teachers(kind.sample, kind.teachers)
    ]
    assert sorted((i, v) for i, v, *_ in served) == [(i, v) for i in range(len(source)) for v in range(kind.views)]
    for index, view, x, label, logits in served:
        decoded = pipeline.decode(source.load(index))
        params = targets.params(index)
        expected = pipeline.view(decoded, params[view] if params is not None else ())
        assert same(x, expected), f"sample {index}: the served input is not view {view}"
        assert label == int(source.labels[index])  # NO_LABEL (-1) for every sample of an unlabelled cache
        if "embedding" in kind.targets:
            check_embeddings(targets, teachers, normalize(stack1(x)), index, view)
        if "logits" not in kind.targets:  # the reader serves the view's embedding in the logits' place
            expected_embedding = torch.from_numpy(targets.embeddings(index, view))
            torch.testing.assert_close(logits.float(), expected_embedding, rtol=1e-6, atol=1e-6)
            continue
        stored = torch.from_numpy(targets.logits(index, view))  # (C,) or (M, C)
        temperature = 2.0 if cell["reader"] == "trainer" else 1.0  # only the trainer is given --temperature 2
        expected_targets = (
            stored if cell["reader"] == "Cache.replay" else combined(stored, cell["teachers"], temperature)
        )
        torch.testing.assert_close(logits.float(), expected_targets, rtol=1e-5, atol=1e-5)
        with torch.inference_mode():
            batch = normalize(stack1(x))
            for member, teacher in enumerate(teachers):
                row = stored if stored.ndim == 1 else stored[member]
                agree(teacher(batch)[0].float(), row, kind.storage, f"sample {index} view {view} teacher {member}")


def check_embeddings(targets, teachers, batch, index: int, view: int) -> None:
    """The stored embedding of (index, view), per teacher, is what enters that teacher's last nn.Linear
    on the served view: read here by a plain forward hook, not by the package's tap."""
    stored = torch.from_numpy(targets.embeddings(index, view))  # (D,) or (M, D)
    for member, teacher in enumerate(teachers):
        last = [module for module in teacher.modules() if isinstance(module, torch.nn.Linear)][-1]
        seen: list[torch.Tensor] = []
        handle = last.register_forward_hook(lambda module, args, out, seen=seen: seen.append(args[0]))
        try:
            with torch.inference_mode():
                teacher(batch)
        finally:
            handle.remove()
        row = stored if stored.ndim == 1 else stored[member]
        what = f"sample {index} view {view} teacher {member}: embedding"
        torch.testing.assert_close(seen[0][0].float(), row, rtol=1e-4, atol=1e-4, msg=what)


def combined(stored: torch.Tensor, teachers: str, t: float) -> torch.Tensor:
    """The target a reader must serve: the row itself, or the teachers mixed as docs/training.md says
    (mean-prob: T * log of the mean softmax at T; weights: the weighted mean)."""
    if stored.ndim == 1:
        return stored
    weights = torch.tensor([0.5, 0.5] if teachers == "two:mean-prob" else [0.7, 0.3])
    return t * torch.log((torch.softmax(stored / t, dim=-1) * weights[:, None]).sum(0))


def stack1(x):
    return {k: v[None] for k, v in x.items()} if isinstance(x, dict) else x[None]


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def agree(teacher: torch.Tensor, stored: torch.Tensor, storage: str, what: str) -> None:
    """The teacher's logits on the served input against a stored row, within what the mode promises:
    float32 logits closely; top-k: the same K classes and values; quant8: within half a step."""
    if storage == "logits":
        torch.testing.assert_close(teacher, stored, rtol=1e-4, atol=1e-4, msg=what)
    elif storage == "topk":
        top = torch.topk(teacher, 2)
        assert torch.equal(top.indices, torch.topk(stored, 2).indices), what
        torch.testing.assert_close(top.values, stored[top.indices], rtol=1e-4, atol=1e-4, msg=what)
    else:
        half_step = float(teacher.max() - teacher.min()) / 255 / 2
        assert float((teacher - stored).abs().max()) <= half_step * 1.01 + 1e-3, what
