"""`Rows`: stored per-sample data as the rest of the code sees it, without HDF5 dataset paths.

A `Rows` holds the storage mode's target arrays and the view parameters of consecutive samples
((n, V, ...) arrays), of one sample ((V, ...)) or of one view ((...)), and the SHA-256 of each
sample's source bytes ((n, 32), (32,)) where the cache has them, and the embeddings' arrays beside
the mode's where the cache stores embeddings. The writer takes `Rows` and the readers return them;
callers ask for dense logits, the arg-max, the embeddings, the parameters or the digests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from softlabels.store.embedding import VALUES as EMBEDDING_VALUES
from softlabels.store.embedding import EmbeddingCodec
from softlabels.store.modes import StorageMode

PARAMS = "views/params"
DIGESTS = "samples/sha256"


@dataclass
class Rows:
    mode: StorageMode
    targets: dict[str, np.ndarray]
    params: np.ndarray | None = None  # int32 view parameters (..., P), when views are augmented
    digests: np.ndarray | None = None  # uint8 SHA-256 of each sample's source bytes (n, 32) or (32,)
    embedding: EmbeddingCodec | None = None  # the embeddings' codec, when the cache stores embeddings

    @classmethod
    def encode(
        cls,
        mode: StorageMode,
        logits,
        params: np.ndarray | None = None,
        digests=None,
        embedding: EmbeddingCodec | None = None,
        features=None,
    ) -> Rows:
        """Rows of teacher logits (torch (n, V, C); None in a cache of embeddings alone) and features
        ((n, V, D), with `embedding`), their (n, V, P) view parameters and (n, 32) digests."""
        targets = {} if logits is None else mode.encode(logits)
        if embedding is not None:
            targets.update(embedding.encode(features))
        return cls(
            mode,
            targets,
            None if params is None else np.asarray(params, dtype=np.int32),
            None if digests is None else np.asarray(digests, dtype=np.uint8),
            embedding,
        )

    def __len__(self) -> int:
        return len(next(iter(self.targets.values())))

    @property
    def logit_targets(self) -> dict[str, np.ndarray]:
        """The storage mode's arrays alone (empty in a cache of embeddings alone)."""
        own = self.embedding.datasets(()) if self.embedding is not None else {}
        return {name: value for name, value in self.targets.items() if name not in own}

    @property
    def has_logits(self) -> bool:
        return bool(self.logit_targets)

    def dense(self) -> np.ndarray:
        """Full float32 logits, (..., C)."""
        if not self.has_logits:
            raise ValueError("this cache stores embeddings, no logits (built with --targets embedding)")
        return self.mode.dense(self.logit_targets)

    def embeddings(self) -> np.ndarray:
        """float32 embeddings, (..., D)."""
        if self.embedding is None or EMBEDDING_VALUES not in self.targets:
            raise ValueError("this cache stores no embeddings (build it with --targets embedding or logits,embedding)")
        return self.embedding.decode(self.targets)

    def top1(self) -> np.ndarray:
        return self.mode.top1(self.logit_targets)

    def take(self, index) -> Rows:
        """Index the leading axis of samples (the digests follow)."""
        return replace(
            self,
            targets={name: value[index] for name, value in self.targets.items()},
            params=None if self.params is None else self.params[index],
            digests=None if self.digests is None else self.digests[index],
        )

    def view(self, view: int) -> Rows:
        """One view of one sample's rows (the sample's digest stays)."""
        return replace(
            self,
            targets={name: value[view] for name, value in self.targets.items()},
            params=None if self.params is None else self.params[view],
        )

    def member(self, member: int) -> Rows:
        """One teacher's rows of one sample ((V, M, ...) -> (V, ...)) of a several-teacher cache."""
        return replace(self, targets={name: value[:, member] for name, value in self.targets.items()})

    @classmethod
    def concat(cls, parts: list[Rows], axis: int = 0) -> Rows:
        """Join rows along samples (axis 0) or views (axis 1: the same samples, so the first digests)."""
        first = parts[0]
        targets = {name: np.concatenate([p.targets[name] for p in parts], axis=axis) for name in first.targets}
        if axis >= 2:  # the teacher axis: every member saw the same views of the same samples
            return replace(first, targets=targets)
        params = None if first.params is None else np.concatenate([p.params for p in parts], axis=axis)
        digests = first.digests
        if digests is not None and axis == 0:
            digests = np.concatenate([p.digests for p in parts], axis=0)
        return replace(first, targets=targets, params=params, digests=digests)

    # -- the store's side: HDF5 dataset paths
    def arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.targets)
        if self.params is not None:
            out[PARAMS] = self.params
        if self.digests is not None:
            out[DIGESTS] = self.digests
        return out

    @classmethod
    def from_arrays(
        cls, mode: StorageMode, arrays: dict[str, np.ndarray], embedding: EmbeddingCodec | None = None
    ) -> Rows:
        targets = {name: value for name, value in arrays.items() if name not in (PARAMS, DIGESTS)}
        return cls(mode, targets, arrays.get(PARAMS), arrays.get(DIGESTS), embedding)
