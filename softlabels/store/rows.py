"""`Rows`: stored per-sample data as the rest of the code sees it, without HDF5 dataset paths.

A `Rows` holds the storage mode's target arrays and the view parameters of consecutive samples
((n, V, ...) arrays), of one sample ((V, ...)) or of one view ((...)). The writer takes `Rows`
and the readers return them; callers ask for dense logits, the arg-max or the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from softlabels.store.modes import StorageMode

PARAMS = "views/params"


@dataclass
class Rows:
    mode: StorageMode
    targets: dict[str, np.ndarray]
    params: np.ndarray | None = None  # int32 view parameters (..., P), when views are augmented

    @classmethod
    def encode(cls, mode: StorageMode, logits, params: np.ndarray | None = None) -> Rows:
        """Rows of teacher logits (torch (n, V, C)) and their (n, V, P) view parameters."""
        return cls(mode, mode.encode(logits), None if params is None else np.asarray(params, dtype=np.int32))

    def __len__(self) -> int:
        return len(next(iter(self.targets.values())))

    def dense(self) -> np.ndarray:
        """Full float32 logits, (..., C)."""
        return self.mode.dense(self.targets)

    def top1(self) -> np.ndarray:
        return self.mode.top1(self.targets)

    def take(self, index) -> Rows:
        """Index the leading axis (samples, or views of one sample)."""
        return Rows(
            self.mode,
            {name: value[index] for name, value in self.targets.items()},
            None if self.params is None else self.params[index],
        )

    def view(self, view: int) -> Rows:
        """One view of one sample's rows."""
        return self.take(view)

    def member(self, member: int) -> Rows:
        """One teacher's rows of one sample ((V, M, ...) -> (V, ...)) of a several-teacher cache."""
        return Rows(self.mode, {name: value[:, member] for name, value in self.targets.items()}, self.params)

    @classmethod
    def concat(cls, parts: list[Rows], axis: int = 0) -> Rows:
        """Join rows along samples (axis 0) or views (axis 1)."""
        first = parts[0]
        targets = {name: np.concatenate([p.targets[name] for p in parts], axis=axis) for name in first.targets}
        if axis >= 2:  # the teacher axis: every member saw the same views
            return cls(first.mode, targets, first.params)
        params = None if first.params is None else np.concatenate([p.params for p in parts], axis=axis)
        return cls(first.mode, targets, params)

    # -- the store's side: HDF5 dataset paths
    def arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.targets)
        if self.params is not None:
            out[PARAMS] = self.params
        return out

    @classmethod
    def from_arrays(cls, mode: StorageMode, arrays: dict[str, np.ndarray]) -> Rows:
        return cls(mode, {name: value for name, value in arrays.items() if name != PARAMS}, arrays.get(PARAMS))
