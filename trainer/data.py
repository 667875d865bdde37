"""Training data: images joined with cached targets by a verified fingerprint, views, samplers, loaders.

Datasets return UN-normalised views (float32 [0, 1], (C, S, S), already at the image size), made by
the same `softlabels.views.ViewPipeline` as the teacher pass: each model normalises on its device
(`softlabels.views.Normalize`).

A cached sample is addressed by (position, view, epoch), yielded by `EpochSampler`: the sampler
shuffles positions each epoch from (seed, epoch) and picks the view from a `ViewSchedule`, a seeded
per-sample permutation of the V stored views, so that every V consecutive epochs use each view once.
`CachedDataset` replays exactly the stored augmentation parameters of that view and returns that
view's dense teacher logits. The epoch also seeds random (uncached) augmentation per sample, so a
run is reproducible whatever the worker count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from softlabels import store
from softlabels.data import DatasetSource, eval_spec_for, open_dataset
from softlabels.data.sample_errors import reading
from softlabels.models.inputs import data_input
from softlabels.models.preprocessing import Preprocessing
from softlabels.replay import ReplayDataset, ViewSchedule
from softlabels.runtime import end_workers
from softlabels.stopping import ignore_in_worker
from softlabels.views import AUGMENTS, Augment, ViewPipeline, random_view

START_METHODS = ("fork", "spawn", "forkserver")


# ----------------------------------------------------------------------------- matching images and cache


def subset_indices(labels: np.ndarray, per_class: int | None) -> np.ndarray:
    """The first `per_class` samples of each class in dataset order (all samples for None)."""
    if per_class is None:
        return np.arange(len(labels))
    if per_class < 1:
        raise ValueError(f"--subset must be at least 1, got {per_class}")
    if np.any(labels == store.NO_LABEL):
        some = "this dataset is unlabelled: it has none" if labels[0] == store.NO_LABEL else "part of it is unlabelled"
        raise ValueError(f"--subset {per_class} keeps images per class, but {some}")
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        keep[np.flatnonzero(labels == label)[:per_class]] = True
    return np.flatnonzero(keep)


# ----------------------------------------------------------------------------- datasets


def _unpack(item) -> tuple[int, int, int]:
    """(index, view, epoch) from a sampler's triple or a plain index (evaluation)."""
    if isinstance(item, (int, np.integer)):
        return int(item), 0, 0
    index, view, epoch = (int(v) for v in item)
    return index, view, epoch


class LabelledDataset(Dataset):
    """(view, label) of a dataset: plain, or randomly augmented by `augment` (seeded per sample and epoch)."""

    def __init__(self, source: DatasetSource, prep: Preprocessing, augment: Augment = AUGMENTS["none"], seed: int = 0):
        self.source, self.seed = source, seed
        self.pipeline = ViewPipeline(prep, augment)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item):
        index, _, epoch = _unpack(item)
        with reading(self.source, index):
            x = self.pipeline.decode(self.source.load(index))
            if self.pipeline.augment.name == "none":
                return self.pipeline.view(x, ()), int(self.source.labels[index])
            return random_view(self.pipeline, x, self.seed, index, epoch), int(self.source.labels[index])


CachedDataset = ReplayDataset  # the trainer's name for it


# ----------------------------------------------------------------------------- loaders


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    sampler: Sampler | None = None,
    start_method: str | None = None,
) -> DataLoader:
    """A loader over `sampler` (in order when None); pinned memory on CUDA, persistent workers.

    A lone trailing sample is dropped: BatchNorm cannot train on a batch of one.
    """
    if start_method is not None and start_method not in START_METHODS:
        raise ValueError(f"unknown start method {start_method!r}; choose one of: {', '.join(START_METHODS)}")
    count = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=sampler is not None and count % batch_size == 1 and count > 1,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
        multiprocessing_context=start_method if workers else None,
        generator=torch.Generator().manual_seed(0),  # worker seeds never draw from the global RNG
        worker_init_fn=ignore_in_worker if workers else None,  # the main process handles stop signals
    )


def close_loader(loader: DataLoader | None) -> None:
    """Stop a loader's persistent workers now (`end_workers`)."""
    if loader is not None:
        end_workers(getattr(loader, "_iterator", None))
        loader._iterator = None


# ----------------------------------------------------------------------------- assembling a run's data


@dataclass
class TrainingData:
    """What a run trains on: the images, their targets, and the view geometry and default statistics."""

    source: DatasetSource
    dataset: Dataset
    indices: np.ndarray
    image_prep: Preprocessing  # the views' input (a cache's recorded one, or the student's own)
    fingerprint: str
    schedule: ViewSchedule | None = None
    cache: store.CacheInfo | None = None  # the (first) cache's record: classes, targets, teachers
    caches: tuple[store.CacheInfo, ...] = ()  # every cache trained from (several: `trainer.combined`)

    def __post_init__(self):
        if not self.caches and self.cache is not None:
            self.caches = (self.cache,)

    @property
    def classes(self) -> list[str]:
        """The classes the student learns: the dataset's, or for unlabelled data the cache's outputs."""
        if self.source.labelled or self.cache is None:
            return list(self.source.classes)
        return self.cache.classes

    @property
    def identity(self) -> dict:
        """What a checkpoint's resume must agree on (see trainer.checkpoints.check_resumable)."""
        identity: dict[str, Any] = {"dataset_fingerprint": self.fingerprint}
        if self.caches:
            targets = [_targets_identity(info) for info in self.caches]
            identity["cache_targets"] = targets[0] if len(targets) == 1 else targets
        return identity


def _targets_identity(info: store.CacheInfo) -> dict:
    """What makes a cache's targets: its teacher(s), views and storage."""
    teachers = [m.weights_sha256 or m.spec for m in info.members]
    return {
        "teacher": teachers[0] if len(teachers) == 1 else teachers,
        **{k: v for k, v in info.meta.to_attrs().items() if k in ("augment", "preprocessing")},
        "storage": info.build.to_dict(),
    }


def open_cache_dataset(info: store.CacheInfo, spec: str | None, data_root: str, download: bool) -> DatasetSource:
    """The images a cache was built on: `spec` when given, else the recorded spec, else its recorded folder."""
    recorded = info.dataset
    split = recorded.split
    if spec is not None:
        return open_dataset(spec, split, data_root, download)
    if not recorded.spec:
        raise ValueError(f"{info.path} records no dataset: pass --dataset to say where its images are")
    try:
        return open_dataset(recorded.spec, split, data_root, download)
    except FileNotFoundError as err:
        folder = Path(recorded.root or "")
        if not recorded.spec.startswith("imagefolder:") or not folder.is_dir():
            raise FileNotFoundError(f"{err}; pass --dataset to say where the cache's images are") from None
    return open_dataset(f"imagefolder:{folder.parent if folder.name == split else folder}", split)


def cached_training_data(
    cache: str,
    spec: str | None = None,
    *,
    data_root: str = "data",
    download: bool = False,
    memory_budget: int = 2 << 30,
    subset: int | None = None,
    augment: Augment = AUGMENTS["none"],
    seed: int = 0,
    allow_changed_augment: bool = False,
    ensemble: str | None = None,
    temperature: float = 1.0,
    views_per_decode: int = 1,
    verify: bool = True,
    check_content: bool = False,
    embeddings: bool = False,
) -> TrainingData:
    """Images joined with a cache's targets, after checking they are the samples it was built on.

    `verify` checks the cache's block checksums (all at once in memory, else each block on first read);
    `check_content` compares every image read with the digest the build recorded."""
    targets = store.CacheTargets(cache, memory_budget=memory_budget, verify=verify)
    source = open_cache_dataset(targets.info, spec, data_root, download)
    dataset = ReplayDataset(  # checks the images against the cache's fingerprint, makes the view schedule
        source,
        targets,
        seed=seed,
        random_augment=augment,
        allow_changed_augment=allow_changed_augment,
        ensemble=ensemble,
        temperature=temperature,
        check_content=check_content,
        embeddings=embeddings,
    )
    if source.labelled and targets.layout.num_classes != len(source.classes):
        raise ValueError(f"the cache has {targets.layout.num_classes} classes but {source.spec} {len(source.classes)}")
    if views_per_decode > targets.layout.num_views:
        raise ValueError(
            f"--views-per-decode {views_per_decode} is more than the {targets.layout.num_views} view(s) "
            f"{cache} stores per sample"
        )
    indices = subset_indices(source.labels, subset)
    return TrainingData(
        source, dataset, indices, targets.info.input, dataset.fingerprint, dataset.schedule, targets.info
    )


def labelled_training_data(
    source: DatasetSource, subset: int | None, augment: Augment, seed: int, image_prep: Preprocessing | None = None
) -> TrainingData:
    """A dataset with its labels (and random augmentation), as views for the input `image_prep` (the
    dataset's defaults when None)."""
    image_prep = image_prep or data_input(source.defaults)
    dataset = LabelledDataset(source, image_prep, augment, seed)
    return TrainingData(
        source,
        dataset,
        subset_indices(source.labels, subset),
        image_prep,
        store.dataset_fingerprint(source.keys, source.labels),
    )


def eval_dataset(
    choice: str | None,
    train: DatasetSource,
    image_prep: Preprocessing,
    data_root: str,
    download: bool,
    classes: list[str] | None = None,
) -> LabelledDataset | None:
    """The held-out set: `none`, a spec, or (None) the test split matching the training data.

    Accuracy needs labels: a named set without them is refused; an automatic one is skipped. After
    unlabelled training data, a set with as many classes as the student learns (`classes`: the
    teacher's outputs, `TrainingData.classes`) is taken, in its own names."""
    if choice == "none":
        return None
    if choice is None:
        found = eval_spec_for(train.spec, data_root)
        if found is None:
            return None
    else:
        found = eval_spec_for(choice, data_root) or (choice, "test")
    source = open_dataset(found[0], found[1], data_root, download)
    if not source.labelled:
        if choice is None:
            return None
        raise ValueError(
            f"the evaluation set {found[0]} ({found[1]}) is unlabelled: accuracy needs labels; "
            f"pass a labelled --eval-dataset or none"
        )
    if not train.labelled:
        expected = len(classes or [])
        if len(source.classes) != expected:
            raise ValueError(
                f"the evaluation set {found[0]} ({found[1]}) has {len(source.classes)} classes but the "
                f"teacher's targets {expected}; pass a matching --eval-dataset or none"
            )
        return LabelledDataset(source, image_prep)
    if list(source.classes) != list(train.classes):
        raise ValueError(
            f"the evaluation set {found[0]} ({found[1]}) has classes {_short(source.classes)} but the "
            f"training set has {_short(train.classes)}; pass a matching --eval-dataset or none"
        )
    return LabelledDataset(source, image_prep)


def held_out_name(dataset: LabelledDataset) -> str:
    """Which held-out set a run evaluated on: `SPEC (SPLIT)`."""
    return f"{dataset.source.spec} ({dataset.source.split})"


def _short(classes) -> str:
    classes = list(classes)
    return ", ".join(classes[:5]) + (f", ... ({len(classes)})" if len(classes) > 5 else "")
