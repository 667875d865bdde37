"""Embedding targets: a teacher's feature vector of every view, stored beside (or instead of) its logits.

A cache's target kinds are `logits` (the storage modes in `modes/`) and `embedding` (this module):
`EmbeddingCodec` owns the `embeddings/...` datasets and how (n, V[, M], D) float32 features go in and
come out. Encodings (`--embedding-dtype`):
- `float16` (default): 2 D bytes a view; relative error ~5e-4 per value, cosine to float32 > 0.9999;
- `float32`: exact, 4 D bytes a view;
- `int8`: D bytes and a float32 scale per row (max |x| / 127): 8-bit values symmetric about zero,
  D + 4 bytes a view (BENCHMARKS.md, "Embedding targets: fidelity").
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from softlabels.store.modes.base import check_finite

TARGET_KINDS = ("logits", "embedding")
EMBEDDING_DTYPES = ("float16", "float32", "int8")
VALUES, SCALE = "embeddings/values", "embeddings/scale"


def parse_targets(text: str | Iterable[str]) -> tuple[str, ...]:
    """`logits`, `embedding` or `logits,embedding` (any order, no repeats) -> kinds in canonical order."""
    given = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in given if t not in TARGET_KINDS]
    if unknown or not given:
        raise ValueError(
            f"unknown target kind {unknown[0] if unknown else text!r}; choose logits, embedding or logits,embedding"
        )
    return tuple(kind for kind in TARGET_KINDS if kind in given)


class EmbeddingCodec:
    """How a cache stores embeddings of width `dim` in encoding `dtype` (one of EMBEDDING_DTYPES).

    Arrays are keyed by dataset path; every method works on the trailing axis, so (n, V, D),
    (n, V, M, D), (V, D) and (D,) all go through the same code (the scale drops the last axis).
    """

    def __init__(self, dim: int, dtype: str = "float16"):
        if dim < 1:
            raise ValueError(f"an embedding needs at least one dimension, got {dim}")
        if dtype not in EMBEDDING_DTYPES:
            raise ValueError(f"unknown embedding dtype {dtype!r}; choose one of: {', '.join(EMBEDDING_DTYPES)}")
        self.dim, self.dtype = dim, dtype

    def datasets(self, rows: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        if self.dtype == "int8":
            return {VALUES: ((*rows, self.dim), np.dtype(np.int8)), SCALE: (tuple(rows), np.dtype(np.float32))}
        return {VALUES: ((*rows, self.dim), np.dtype(self.dtype))}

    @property
    def bytes_per_view(self) -> int:
        return sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.datasets((1, 1)).values())

    def encode(self, features) -> dict[str, np.ndarray]:
        """Stored arrays of a torch tensor (n, ..., D) of float features; raises NonFiniteOutputs naming rows of n."""
        import torch

        features = features.float()
        check_finite(features)
        if self.dtype == "int8":
            scale = (features.abs().amax(dim=-1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
            values = torch.round(features / scale[..., None]).clamp(-127, 127).to(torch.int8)
            return {VALUES: values.cpu().numpy(), SCALE: scale.cpu().numpy()}
        stored = features.to(getattr(torch, self.dtype))
        check_finite(stored)  # float16 overflows past 65504
        return {VALUES: stored.cpu().numpy()}

    def decode(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """float32 embeddings (..., D) from stored arrays."""
        values = arrays[VALUES].astype(np.float32)
        return values * arrays[SCALE][..., None] if self.dtype == "int8" else values

    def finite(self, arrays: dict[str, np.ndarray]) -> bool:
        return bool(np.isfinite(self.decode(arrays)).all())

    def differences(self, arrays: dict[str, np.ndarray], fresh: np.ndarray) -> np.ndarray:
        """1 - cosine(stored, fresh) of every view, for fresh float32 features (..., D): how far the
        stored direction is from the teacher's (the magnitude is what the encoding rounds)."""
        return 1.0 - cosine(self.decode(arrays), fresh)

    def export(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"embeddings": self.decode(arrays)}

    def label(self) -> str:
        scale = " + float32 scale per row" if self.dtype == "int8" else ""
        return f"{self.dim}-D {self.dtype} embeddings{scale}"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((self.dim, self.dtype))

    def __repr__(self) -> str:
        return f"EmbeddingCodec(dim={self.dim}, dtype={self.dtype!r})"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis (0 where either vector is zero)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return np.where(norms > 0, (a * b).sum(-1) / np.maximum(norms, 1e-300), 0.0)
