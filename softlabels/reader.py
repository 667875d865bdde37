"""`open_cache`: a cache as a user's own training loop sees it (keys, labels, classes, soft targets).

    import softlabels
    cache = softlabels.open_cache("data/cifar10-train.h5")
    cache.check_dataset("cifar10")                 # refuses other images than the cache's
    p = cache.targets("17", temperature=2.0)       # (C,) soft targets of sample "17", view 0
    p = cache.targets([0, 1, 2], view=None)        # (3, V, C) every view of three samples

Built on `format.CacheTargets`: small caches are read into memory once, larger ones row by row
through a handle each process opens for itself, so a `Cache` can be handed to DataLoader workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

from softlabels import format as fmt

Index = Union[int, str, np.integer]


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

    def __init__(self, path, memory_budget: int = 2 << 30):
        self.path = str(path)
        self._targets = fmt.CacheTargets(path, memory_budget)
        self.info = self._targets.info
        keys, labels = fmt.read_keys_labels(path)
        self.keys: list[str] = keys
        self.labels: np.ndarray = labels
        self.classes: list[str] = list(self.info.dataset.get("classes") or map(str, range(self.num_classes)))
        self._positions: dict[str, int] | None = None

    @property
    def num_views(self) -> int:
        return self.info.layout.num_views

    @property
    def num_classes(self) -> int:
        return self.info.layout.num_classes

    def __len__(self) -> int:
        return len(self.keys)

    def __repr__(self) -> str:
        return (f"Cache({self.path!r}: {len(self)} samples x {self.num_views} view(s), {self.num_classes} classes, "
                f"teacher {self.info.teacher.get('spec')})")

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
        if view is not None and not -self.num_views <= view < self.num_views:
            raise IndexError(f"view {view} out of range: {self.path} has {self.num_views} view(s)")
        return self._targets.logits(self._position(item), view)

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

        `source` is a `DatasetSource` (from `open_dataset`) or a dataset spec such as `cifar10`,
        opened on `split` (default: the cache's split) under `root`.
        """
        if isinstance(source, str):
            from softlabels.datasets import open_dataset

            source = open_dataset(source, split or self.info.dataset.get("split", "train"), root)
        from softlabels.checks import require_same_samples

        fingerprint = fmt.dataset_fingerprint(source.keys, source.labels)
        if fingerprint != fmt.dataset_fingerprint(self.keys, self.labels):
            require_same_samples(self.path, source)  # says what differs
        return fingerprint

    def close(self) -> None:
        self._targets.close()

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(path, memory_budget: int = 2 << 30) -> Cache:
    """Open a complete cache for reading (caches up to `memory_budget` bytes are read into memory)."""
    return Cache(path, memory_budget)
