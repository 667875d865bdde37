"""Replaying a cache's stored views in any training loop: `ReplayDataset`, its view schedule and sampler.

    cache = softlabels.open_cache("cache.h5")
    data = cache.dataset(softlabels.open_dataset("imagefolder:images"))  # checks the images first
    for epoch in range(epochs):
        data.set_epoch(epoch)                        # integer indices follow the view schedule
        for x, label, teacher_logits in DataLoader(data, batch_size=64, shuffle=True): ...

A sample is addressed by (position, view, epoch). `ViewSchedule` is a seeded per-sample permutation
of the V stored views, so that every V consecutive epochs use each view once. A plain integer index
takes the view of the epoch set by `set_epoch`, kept in shared memory (`SharedEpoch`) so that
DataLoader workers, persistent or not, forked or spawned, read the epoch the main process set last;
`sampler()`'s indices carry their view and epoch themselves. `EpochSampler`
shuffles positions each epoch from (seed, epoch) and yields (position, view, epoch) triples; the
trainer and Lightning call its `set_epoch`. The replayed input is the build's exact view
(`softlabels.views.replay_view`), with the teacher's dense logits of that view.
"""

from __future__ import annotations

import multiprocessing
import warnings
from multiprocessing.context import get_spawning_popen

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from softlabels import store
from softlabels.audit import require_same_samples
from softlabels.data import DatasetSource
from softlabels.data.sample_errors import SampleError, reading
from softlabels.ensemble import Ensemble, check_one_teacher
from softlabels.views import AUGMENTS, Augment, Normalize, ViewPipeline, random_view, replay_pipeline, replay_view


class NoDigestsWarning(UserWarning):
    """Content checks asked of a cache built before sample digests existed."""


class UnscheduledReplayWarning(UserWarning):
    """A multi-view cache read by integer index without `set_epoch`: every epoch would see view set 0."""


class SharedEpoch:
    """The epoch `set_epoch` set, in shared memory: a DataLoader worker keeps its own copy of the
    dataset (for all epochs with `persistent_workers=True`), so a plain attribute set in the main
    process after the workers started would never reach them. Forked workers inherit the memory,
    spawned ones receive it while they start; any other copy (pickle, deepcopy) gets its own."""

    def __init__(self, epoch: int = -1):
        self._value = multiprocessing.RawValue("q", epoch)  # -1: never set

    def get(self) -> int | None:
        epoch = int(self._value.value)
        return None if epoch < 0 else epoch

    def set(self, epoch: int) -> None:
        self._value.value = int(epoch)

    def __getstate__(self):
        return {"value": self._value if get_spawning_popen() is not None else int(self._value.value)}

    def __setstate__(self, state) -> None:
        value = state["value"]
        self._value = multiprocessing.RawValue("q", value) if isinstance(value, int) else value


class ViewSchedule:
    """view(index, epoch) = perm_index[epoch % V], one seeded permutation of the V views per sample."""

    def __init__(self, num_samples: int, num_views: int, seed: int):
        self.num_views = num_views
        rng = np.random.default_rng([int(seed), num_views, 0x71E5])
        self.order = np.argsort(rng.random((num_samples, num_views)), axis=1).astype(np.int32)

    def view(self, index: int, epoch: int) -> int:
        return int(self.order[index, epoch % self.num_views])


class EpochSampler(Sampler):
    """Yields (position, view, epoch) for every position, reshuffled from (seed, epoch) by `set_epoch`;
    with `per_decode` R > 1, (position, R views, epoch): R stored views of one decoded sample (FKD's
    trick), every view once per V / R epochs.

    Under torchrun rank r takes every world-th item of the shuffled order, padded by repetition so all
    ranks run the same number of batches (harmless in training, and DDP would hang otherwise).
    """

    def __init__(
        self,
        indices,
        seed: int,
        schedule: ViewSchedule | None = None,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        per_decode: int = 1,
    ):
        self.indices, self.seed, self.schedule, self.shuffle = np.asarray(indices), seed, schedule, shuffle
        self.rank, self.world_size, self.epoch, self.start = rank, world_size, 0, 0
        self.per_decode = per_decode

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Shuffle for `epoch`; `start` skips that many of this rank's items (an epoch resumed mid-way)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return -(-len(self.indices) // self.world_size)

    def __iter__(self):
        count = len(self.indices)
        order = (
            np.random.default_rng([int(self.seed), self.epoch]).permutation(count) if self.shuffle else np.arange(count)
        )
        order = np.resize(order, len(self) * self.world_size)[self.rank :: self.world_size]
        for position in order[self.start :].tolist():
            index = int(self.indices[position])
            if self.per_decode > 1:  # R views of one decode: slots epoch * R ... epoch * R + R - 1 of the schedule
                slots = range(self.epoch * self.per_decode, (self.epoch + 1) * self.per_decode)
                yield index, tuple(self.schedule.view(index, s) if self.schedule else 0 for s in slots), self.epoch
                continue
            view = self.schedule.view(index, self.epoch) if self.schedule else 0
            yield index, view, self.epoch


def check_same_samples(targets: store.CacheTargets, source: DatasetSource) -> str:
    """Refuse images that are not the ones the cache was built on; returns the shared fingerprint."""
    fingerprint = store.dataset_fingerprint(source.keys, source.labels)
    if fingerprint != targets.info.fingerprint:
        require_same_samples(targets.path, source, targets)  # says what differs (or passes a cache without one)
    return fingerprint


class ReplayDataset(Dataset):
    """(input, label, teacher logits) of a cache's samples: stored view v replayed exactly, with its targets.

    Args:
        source: the images the cache was built on (checked against its fingerprint here, at once).
        targets: the cache's targets (`store.CacheTargets`) or its path.
        normalize: normalise inputs with the cache's recorded statistics (else float32 in [0, 1]).
        transform: a callable applied to each input tensor last.
        seed: seeds the view schedule and, with `random_augment`, the random views.
        random_augment: pair random views of this `Augment` with the stored targets instead
            (inconsistent teaching, the explicit `--inconsistent-augment` choice, for comparisons).
        allow_changed_augment: replay with a user augmentation that changed since the build.
        ensemble: with several teachers, how to mix them (`softlabels.ensemble`): `mean-prob`
            [default], `mean-logit`, weights `0.7,0.3`, or `teacher:NAME|INDEX`.
        temperature: the distillation temperature `mean-prob` and weights average probabilities at.
        embeddings: add the view's stored teacher embedding as a fourth item, (D,) float32 (caches
            built with `--targets embedding`); a cache of embeddings alone then gives empty (0,)
            logits, and without this flag its embedding in the logits' place.
        check_content: compare each sample's source bytes with the SHA-256 the build stored, and raise
            SampleError naming a sample whose content changed. Off by default: hashing cost 8-24% of a
            sample's read on the measured datasets (BENCHMARKS.md), above the 2% a default may cost;
            `softlabels verify --dataset` checks every sample once instead.
    Raises:
        ValueError: the images are not the ones the cache was built on, or a user augmentation
            changed since the build (saying what differs).
    """

    def __init__(
        self,
        source: DatasetSource,
        targets,
        *,
        normalize: bool = False,
        transform=None,
        seed: int = 0,
        random_augment: Augment = AUGMENTS["none"],
        allow_changed_augment: bool = False,
        ensemble: str | None = None,
        temperature: float = 1.0,
        check_content: bool = False,
        embeddings: bool = False,
    ):
        if not isinstance(targets, store.CacheTargets):
            targets = store.CacheTargets(targets)
        if embeddings and targets.layout.embedding is None:
            raise ValueError(
                f"{targets.path} stores no embeddings: build it with --targets embedding (or logits,embedding)"
            )
        self.embeddings = embeddings
        self.fingerprint = check_same_samples(targets, source)
        self.source, self.targets, self.seed, self.transform = source, targets, seed, transform
        prep = targets.info.input
        self.replay = replay_pipeline(targets.info, source, allow_changed_augment)
        self.random = ViewPipeline(prep, random_augment)
        self.normalize = Normalize(prep) if normalize else None
        self.schedule = ViewSchedule(len(source), targets.layout.num_views, seed)
        self.ensemble = None
        if targets.layout.num_teachers > 1:
            self.ensemble = Ensemble.parse(ensemble, targets.info.member_names, temperature)
        else:
            check_one_teacher(ensemble, targets.path)
        if embeddings and self.ensemble is not None and self.ensemble.member is None:
            raise ValueError(
                f"{targets.path} holds {targets.layout.num_teachers} teachers' embeddings and they are not mixed: "
                f"pick one with --ensemble teacher:NAME|INDEX (members: {', '.join(targets.info.member_names)})"
            )
        self._epoch = SharedEpoch()
        self._warned = False
        self.check_content = content_checking(targets, source, check_content)

    @property
    def num_views(self) -> int:
        return self.targets.layout.num_views

    def __len__(self) -> int:
        return len(self.source)

    @property
    def epoch(self) -> int | None:
        """The epoch `set_epoch` set last (None before the first call)."""
        return self._epoch.get()

    def set_epoch(self, epoch: int) -> None:
        """Integer indices take, for each sample, the view the schedule gives this epoch, also in
        DataLoader workers that started before this call."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.set(epoch)

    def sampler(self, shuffle: bool = True, rank: int = 0, world_size: int = 1, per_decode: int = 1) -> EpochSampler:
        """A sampler whose indices carry their view (for persistent workers and Lightning, which calls
        its `set_epoch`); `per_decode` R > 1 hands out R views of each decoded sample at once."""
        return EpochSampler(np.arange(len(self)), self.seed, self.schedule, shuffle, rank, world_size, per_decode)

    def _address(self, item) -> tuple[int, int, int]:
        if isinstance(item, (int, np.integer)):
            epoch = self.epoch
            if epoch is None and self.num_views > 1 and not self._warned:
                self._warned = True
                warnings.warn(
                    f"{self.targets.path} holds {self.num_views} views per sample but set_epoch() was never "
                    f"called: every epoch replays the views of epoch 0; call dataset.set_epoch(epoch) "
                    f"each epoch, or use dataset.sampler()",
                    UnscheduledReplayWarning,
                    stacklevel=3,
                )
            index, epoch = int(item), epoch or 0
            return index, self.schedule.view(index, epoch), epoch
        index, view, epoch = (int(v) for v in item)
        return index, view, epoch

    def __getitem__(self, item):
        """(input, label, logits) of one stored view; with a tuple of views (`sampler(per_decode=R)`),
        the sample is decoded once and the R views come stacked: (R, C, S, S), (R,), (R, classes)."""
        if not isinstance(item, (int, np.integer)) and isinstance(item[1], tuple):
            index, views, epoch = int(item[0]), item[1], int(item[2])
            rows = self.targets.rows(index)
            with reading(self.source, index):
                x = self.replay.decode(self._load(index, rows))
            made = [self._one(index, rows.view(v), x, epoch) for v in views]
            targets = (torch.stack([m[at] for m in made]) for at in range(2, len(made[0])))
            return (torch.stack([m[0] for m in made]), torch.full((len(views),), made[0][1]), *targets)
        index, view, epoch = self._address(item)
        rows = self.targets.rows(index).view(view)  # one read for the targets, view parameters and digest
        with reading(self.source, index):
            x = self.replay.decode(self._load(index, rows))
        return self._one(index, rows, x, epoch)

    def _one(self, index: int, rows: store.Rows, x, epoch: int):
        with reading(self.source, index):
            if self.random.augment.name != "none":
                image = random_view(self.random, x, self.seed, index, epoch)
            else:
                image = replay_view(self.replay, x, rows)
        if self.normalize is not None:
            image = self.normalize(image[None])[0]
        if self.transform is not None:
            image = self.transform(image)
        if rows.has_logits:
            dense = rows.dense()  # (C,), or (M, C) with M teachers
        elif self.embeddings:
            dense = np.zeros(0, np.float32)  # the embedding comes as the fourth item
        else:  # a cache of embeddings alone: the embedding is the target, as `Cache.replay` gives it
            dense = rows.embeddings()
        if self.ensemble is not None and rows.has_logits:
            dense = self.ensemble.combine(dense)
        logits = torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))
        if self.embeddings:
            stored = rows.embeddings()  # (D,), or (M, D) with M teachers: the one --ensemble picks
            stored = stored if self.ensemble is None else stored[..., self.ensemble.member, :]
            embedding = torch.from_numpy(np.ascontiguousarray(stored, dtype=np.float32))
            return image, int(self.source.labels[index]), logits, embedding
        return image, int(self.source.labels[index]), logits

    def _load(self, index: int, rows: store.Rows):
        if not self.check_content:
            return self.source.load(index)
        image, digest = self.source.read(index)
        assert rows.digests is not None  # content_checking: only caches with digests
        check_digest(self.source, index, digest, rows.digests, self.targets.path)
        return image


def check_digest(source: DatasetSource, index: int, digest: bytes, stored: np.ndarray, cache: str) -> None:
    """Raise SampleError naming a sample whose source bytes are not the ones the cache was built on."""
    if digest != np.asarray(stored, dtype=np.uint8).tobytes():
        raise SampleError(
            f"{source.where(index)} changed since {cache} was built (its SHA-256 differs from the recorded one): "
            f"its targets belong to other content; restore the file, or rebuild the cache"
        )


def content_checking(targets: store.CacheTargets, source: DatasetSource, asked: bool) -> bool:
    """Whether to check each sample's digest: when asked and the cache has digests (else a warning)."""
    if not targets.layout.sample_digests:
        if asked:
            warnings.warn(
                f"{targets.path} holds no sample digests (built before they existed): content is not checked; "
                f"rebuild the cache to have them",
                NoDigestsWarning,
                stacklevel=3,
            )
        return False
    return asked
