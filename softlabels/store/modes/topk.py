"""`topk`: the K largest logits of each view, their classes, and the log-sum-exp over all classes.

Rebuilding full logits (docs/FORMAT.md, "Top-k"): the K stored logits are kept exactly; the C-K
missing classes share one logit chosen so that their total probability at temperature 1 equals the
true tail mass, known exactly from the stored log-sum-exp. Any temperature then applies as usual.
"""

from __future__ import annotations

import numpy as np

from softlabels.store.modes.base import StorageMode, check_finite, index_dtype

VALUES, INDICES, LOGSUMEXP = "topk/values", "topk/indices", "topk/logsumexp"


class TopK(StorageMode):
    name = "topk"
    description = "the K largest logits of each view, their classes and the log-sum-exp"

    def __init__(self, num_classes, dtype="float16", topk=None):
        if not (topk and 1 <= topk <= num_classes):
            raise ValueError(f"top-k K must be between 1 and the number of classes ({num_classes}), got {topk}")
        super().__init__(num_classes, dtype, topk)

    def datasets(self, rows):
        k = self.topk
        return {
            VALUES: ((*rows, k), np.dtype(self.dtype)),
            INDICES: ((*rows, k), index_dtype(self.num_classes)),
            LOGSUMEXP: (tuple(rows), np.dtype(np.float32)),
        }

    def encode(self, logits):
        """Top-k selection runs on the logits' device; only the selected values cross to the host."""
        import torch

        logits = logits.float()
        check_finite(logits)
        values, indices = torch.topk(logits, self.topk, dim=-1, sorted=True)
        stored = values.to(getattr(torch, self.dtype))
        check_finite(stored)
        return {
            VALUES: stored.cpu().numpy(),
            INDICES: indices.cpu().numpy().astype(index_dtype(self.num_classes)),
            LOGSUMEXP: torch.logsumexp(logits, dim=-1).cpu().numpy().astype(np.float32),
        }

    def dense(self, arrays):
        return rebuild(
            arrays[VALUES].astype(np.float32),
            arrays[INDICES].astype(np.int64),
            arrays[LOGSUMEXP].astype(np.float32),
            self.num_classes,
        )

    def top1(self, arrays):
        return arrays[INDICES][..., 0].astype(np.int64)

    def differences(self, arrays, fresh):
        import torch

        head = np.take_along_axis(fresh, arrays[INDICES].astype(np.int64), axis=-1)
        lse = torch.logsumexp(torch.from_numpy(fresh), dim=-1).numpy()
        return np.maximum(
            np.abs(arrays[VALUES].astype(np.float32) - head).max(axis=-1), np.abs(arrays[LOGSUMEXP] - lse)
        )

    def export(self, arrays):
        return {
            "topk_values": arrays[VALUES].astype(np.float32),
            "topk_indices": arrays[INDICES].astype(np.int64),
            "topk_logsumexp": arrays[LOGSUMEXP].astype(np.float32),
        }

    def label(self, short=False):
        return f"{self.dtype} top-{self.topk}" if short else f"top-{self.topk} logits + logsumexp, {self.dtype}"


def rebuild(values: np.ndarray, indices: np.ndarray, lse: np.ndarray, num_classes: int) -> np.ndarray:
    """Full (..., C) logits from the K kept ones: the C-K others share the logit that gives them the
    exact tail mass at temperature 1 (docs/FORMAT.md, "Top-k")."""
    lse = lse[..., None]
    k = values.shape[-1]
    out = np.empty(values.shape[:-1] + (num_classes,), dtype=np.float32)
    if k < num_classes:
        head_mass = np.exp(values - lse).sum(axis=-1, keepdims=True)
        tail_mass = np.clip(1.0 - head_mass, 1e-12, None)
        out[...] = lse + np.log(tail_mass / (num_classes - k))
    np.put_along_axis(out, indices, values, axis=-1)
    return out
