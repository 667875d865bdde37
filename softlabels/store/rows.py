"""`Rows`: stored per-sample data as the rest of the code sees it, without HDF5 dataset paths.

A `Rows` holds the storage mode's target arrays and the view parameters of consecutive samples
((n, V, ...) arrays), of one sample ((V, ...)) or of one view ((...)), and the SHA-256 of each
sample's source bytes ((n, 32), (32,)) where the cache has them. The writer takes `Rows` and the
readers return them; callers ask for dense logits, the arg-max, the parameters or the digests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softlabels.store.modes import StorageMode

PARAMS = "views/params"
DIGESTS = "samples/sha256"


@dataclass
class Rows:
    mode: StorageMode
    targets: dict[str, np.ndarray]
    params: np.ndarray | None = None  # int32 view parameters (..., P), when views are augmented
    digests: np.ndarray | None = None  # uint8 SHA-256 of each sample's source bytes (n, 32) or (32,)

    @classmethod
    def encode(cls, mode: StorageMode, logits, params: np.ndarray | None = None, digests=None) -> Rows:
        """Rows of teacher logits (torch (n, V, C)), their (n, V, P) view parameters and (n, 32) digests."""
        return cls(
            mode,
            mode.encode(logits),
            None if params is None else np.asarray(params, dtype=np.int32),
            None if digests is None else np.asarray(digests, dtype=np.uint8),
        )

    def __len__(self) -> int:
        return len(next(iter(self.targets.values())))

    def dense(self) -> np.ndarray:
        """Full float32 logits, (..., C)."""
        return self.mode.dense(self.targets)

    def top1(self) -> np.ndarray:
        return self.mode.top1(self.targets)

    def take(self, index) -> Rows:
        """Index the leading axis of samples (the digests follow)."""
        return Rows(
            self.mode,
            {name: value[index] for name, value in self.targets.items()},
            None if self.params is None else self.params[index],
            None if self.digests is None else self.digests[index],
        )

    def view(self, view: int) -> Rows:
        """One view of one sample's rows (the sample's digest stays)."""
        return Rows(
            self.mode,
            {name: value[view] for name, value in self.targets.items()},
            None if self.params is None else self.params[view],
            self.digests,
        )

    def member(self, member: int) -> Rows:
        """One teacher's rows of one sample ((V, M, ...) -> (V, ...)) of a several-teacher cache."""
        targets = {name: value[:, member] for name, value in self.targets.items()}
        return Rows(self.mode, targets, self.params, self.digests)

    @classmethod
    def concat(cls, parts: list[Rows], axis: int = 0) -> Rows:
        """Join rows along samples (axis 0) or views (axis 1: the same samples, so the first digests)."""
        first = parts[0]
        targets = {name: np.concatenate([p.targets[name] for p in parts], axis=axis) for name in first.targets}
        if axis >= 2:  # the teacher axis: every member saw the same views of the same samples
            return cls(first.mode, targets, first.params, first.digests)
        params = None if first.params is None else np.concatenate([p.params for p in parts], axis=axis)
        digests = first.digests
        if digests is not None and axis == 0:
            digests = np.concatenate([p.digests for p in parts], axis=0)
        return cls(first.mode, targets, params, digests)

    # -- the store's side: HDF5 dataset paths
    def arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.targets)
        if self.params is not None:
            out[PARAMS] = self.params
        if self.digests is not None:
            out[DIGESTS] = self.digests
        return out

    @classmethod
    def from_arrays(cls, mode: StorageMode, arrays: dict[str, np.ndarray]) -> Rows:
        targets = {name: value for name, value in arrays.items() if name not in (PARAMS, DIGESTS)}
        return cls(mode, targets, arrays.get(PARAMS), arrays.get(DIGESTS))
