"""`open_cache`: a cache as a user's own training loop sees it (keys, labels, classes, soft targets,
and the exact view the teacher saw).

    import softlabels
    cache = softlabels.open_cache("data/cifar10-train.h5")
    source = cache.check_dataset("cifar10")        # refuses other images than the cache's
    p = cache.targets("17", temperature=2.0)       # (C,) soft targets of sample "17", view 0
    p = cache.targets([0, 1, 2], view=None)        # (3, V, C) every view of three samples
    e = cache.embeddings("17")                     # (D,) teacher embedding (--targets embedding)
    x, label, logits = cache.replay(source, 17, view=2)   # view 2 of sample 17, as the teacher saw it

Built on `store.CacheTargets`: small caches are read into memory once, larger ones row by row
through a handle each process opens for itself, so a `Cache` can be handed to DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from softlabels import store
from softlabels.audit import require_same_samples
from softlabels.data import open_dataset
from softlabels.replay import ReplayDataset
from softlabels.views import Normalize, replay_pipeline, replay_view

if TYPE_CHECKING:  # torch and the views are imported when a view is replayed: reading targets needs neither
    from softlabels.views import ViewPipeline

Index = int | str | np.integer


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) over the last axis, in float32."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    scaled = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)
    np.exp(scaled, out=scaled)
    scaled /= scaled.sum(axis=-1, keepdims=True)
    return scaled


class Cache:
    """A complete cache opened for reading; index it by position or by sample key."""

    def __init__(self, path, memory_budget: int = 2 << 30, verify: bool = True):
        self.path = str(path)
        self._targets = store.CacheTargets(path, memory_budget, verify=verify)
        self.info = self._targets.info
        keys, labels = self._targets.keys_labels()
        self.keys: list[str] = keys
        self.labels: np.ndarray = labels
        self.classes: list[str] = self.info.classes
        self._positions: dict[str, int] | None = None
        self._pipeline: ViewPipeline | None = None
        self._checked = None  # the last source check_dataset accepted

    @property
    def num_views(self) -> int:
        return self.info.layout.num_views

    @property
    def num_classes(self) -> int:
        return self.info.layout.num_classes

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (
            f"Cache({self.path!r}: {len(self)} samples x {self.num_views} view(s), {self.num_classes} classes, "
            f"teacher {self.info.teacher.spec})"
        )

    def index_of(self, key: str) -> int:
        """The position of the sample with this key."""
        if self._positions is None:
            self._positions = {k: i for i, k in enumerate(self.keys)}
        try:
            return self._positions[key]
        except KeyError:
            raise KeyError(f"{key!r} is not a key of {self.path} (its keys look like {self.keys[0]!r})") from None

    def logits(self, item: Index | Sequence[Index], view: int | None = 0) -> np.ndarray:
        """Dense float32 teacher logits: (C,) for one sample and view, (V, C) with view=None;
        a list of samples adds a leading axis. Top-k caches are expanded (docs/FORMAT.md)."""
        if not isinstance(item, (int, str, np.integer)):
            return np.stack([self.logits(one, view) for one in item])
        return self._targets.logits(self._position(item), None if view is None else self._view(view))

    def embeddings(self, item: Index | Sequence[Index], view: int | None = 0) -> np.ndarray:
        """float32 teacher embeddings of a sample (position or key): (D,) for one view, (V, D) for
        view=None, stacked over a list of items; (M, D) / (V, M, D) with M teachers. Caches built with
        `--targets embedding` or `logits,embedding` have them."""
        if isinstance(item, Sequence) and not isinstance(item, str):
            return np.stack([self.embeddings(one, view) for one in item])
        return self._targets.embeddings(self._position(item), None if view is None else self._view(view))

    @property
    def embedding_dim(self) -> int:
        """Width D of the stored embeddings (0: the cache stores none)."""
        return self.info.layout.embedding_dim

    def targets(self, item: Index | Sequence[Index], view: int | None = 0, temperature: float = 1.0) -> np.ndarray:
        """Soft targets softmax(logits / temperature), shaped like `logits(item, view)`."""
        return softmax(self.logits(item, view), temperature)

    def _position(self, item: Index) -> int:
        if isinstance(item, str):
            return self.index_of(item)
        position = int(item)
        if not -len(self) <= position < len(self):
            raise IndexError(f"sample {position} out of range: {self.path} has {len(self)} samples")
        return position % len(self)

    def check_dataset(self, source, split: str | None = None, root: str | Path = "data") -> str:
        """Refuse a dataset whose (key, label) list is not the cache's; returns the shared fingerprint.

        Args:
            source: a `DatasetSource` (from `open_dataset`) or a dataset spec such as `cifar10`.
            split: the split of a spec [default: the cache's].
            root: where built-in datasets live.
        Raises:
            ValueError: naming the samples added, removed, renamed or relabelled.
        """
        source = self._source(source, split, root)
        fingerprint = store.dataset_fingerprint(source.keys, source.labels)
        if fingerprint != store.dataset_fingerprint(self.keys, self.labels):
            require_same_samples(self.path, source, self._targets)  # says what differs
        return fingerprint

    def _source(self, source, split: str | None, root):
        if isinstance(source, str):
            return open_dataset(source, split or self.info.dataset.split, root)
        return source

    def dataset(self, source, normalize: bool = True, transform=None, seed: int = 0):
        """A `torch.utils.data.Dataset` of (input, label, teacher logits) for any training loop (a
        cache of embeddings alone gives the view's embedding in the logits' place; an unlabelled
        cache gives the label -1).

        Args:
            source: the cache's samples (a `DatasetSource` or a spec); checked against the cache now.
            normalize: normalise inputs with the cache's recorded statistics (else float32 in [0, 1]).
            transform: a callable applied to each input tensor last.
            seed: seeds the view schedule (every view once per V epochs).
        Returns:
            A `softlabels.replay.ReplayDataset`: call its `set_epoch(epoch)` every epoch (integer
            indices then follow the view schedule), or iterate it with its `sampler()`.
        Raises:
            ValueError: the images are not the ones the cache was built on (saying what differs).
        """
        return ReplayDataset(
            self._source(source, None, "data"), self._targets, normalize=normalize, transform=transform, seed=seed
        )

    def replay(self, source, item: Index, view: int = 0, normalize: bool = False):
        """The input the teacher saw for view `view` of a sample, with its label and logits.

        Args:
            source: the cache's samples (a `DatasetSource` or a spec; see `check_dataset`).
            item: a position or key.
            view: which stored view.
            normalize: normalise with the cache's recorded statistics (else float32 [0, 1]).
        Returns:
            (input (C, S, S) float32 tensor, label, dense float32 logits (C,)); a cache of embeddings
            alone gives the view's embedding (D,) in place of the logits.
        """
        source = self._source(source, None, "data")
        position = self._position(item)
        if source is not self._checked:  # once per source: its keys and labels are the cache's
            self.check_dataset(source)
            self._checked = source
            self._pipeline = replay_pipeline(self.info, source)  # mixed views: partners from `source`
        assert self._pipeline is not None
        rows = self._targets.rows(position).view(self._view(view))
        image = replay_view(self._pipeline, self._pipeline.decode(source.load(position)), rows)
        if normalize:
            image = Normalize(self.info.input)(image[None])[0]
        target = rows.dense() if rows.has_logits else rows.embeddings()
        return image, int(self.labels[position]), torch.from_numpy(target)

    def _view(self, view: int) -> int:
        if not -self.num_views <= view < self.num_views:
            raise IndexError(f"view {view} out of range: {self.path} has {self.num_views} view(s)")
        return view % self.num_views

    def close(self) -> None:
        self._targets.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(path, memory_budget: int = 2 << 30, verify: bool = True) -> Cache:
    """Open a complete cache for reading.

    Args:
        path: the cache file, or a URL read through fsspec (`s3://...`, `hf://...`; fsspec installed).
        memory_budget: caches whose targets fit in this many bytes are read into memory at once.
        verify: check block checksums: all of them when read into memory, else each block when first read.
    Raises:
        FileNotFoundError: no such file (the message names a partial build when one exists).
        softlabels.CacheError: not a cache, incomplete, damaged or untrusted, or replaced since it was opened.
    """
    return Cache(path, memory_budget, verify)
