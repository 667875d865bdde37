"""`quant8`: logits quantised to 8 bits per class with a per-view float16 top value and step.

Without `--topk` every class is kept: C + 4 bytes a view (14 for 10 classes, against 20 for float16
logits), and the rebuilt logits are within half a step (1/510 of the view's logit range) of the
teacher's at every temperature. With `--topk K` only the K largest are kept (their 8-bit values,
their class indices bit-packed at ceil(log2 C) bits each) with the log-sum-exp over all classes,
and the tail is rebuilt as `topk`'s (docs/FORMAT.md): K + ceil(K * bits / 8) + 8 bytes a view, so
K=14 of 1000 classes takes 40 bytes where float16 top-10 takes 44 (and its rebuild error at T=4 is
lower: more classes kept, at no measurable cost from the 8-bit values; BENCHMARKS.md).
"""

from __future__ import annotations

import math

import numpy as np

from softlabels.store.modes.base import StorageMode, check_finite
from softlabels.store.modes.topk import rebuild

VALUES, SCALE, INDICES, LOGSUMEXP = "quant8/values", "quant8/scale", "quant8/indices", "quant8/logsumexp"


def index_bits(num_classes: int) -> int:
    return max(1, math.ceil(math.log2(num_classes)))


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """(..., K) class indices -> (..., ceil(K * bits / 8)) uint8: each index's bits, lowest first."""
    shifts = np.arange(bits, dtype=np.uint32)
    flat = ((indices[..., None].astype(np.uint32) >> shifts) & 1).astype(np.uint8)
    flat = flat.reshape(*indices.shape[:-1], -1)
    return np.packbits(flat, axis=-1, bitorder="little")


def unpack_indices(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    flat = np.unpackbits(packed, axis=-1, count=count * bits, bitorder="little")
    flat = flat.reshape(*packed.shape[:-1], count, bits).astype(np.int64)
    return flat @ (np.int64(1) << np.arange(bits, dtype=np.int64))


class Quant8(StorageMode):
    name = "quant8"
    description = "8-bit logits with a per-view top value and step (all classes, or the top K)"

    def __init__(self, num_classes, dtype="float16", topk=None):
        if topk is not None and not 1 <= topk <= num_classes:
            raise ValueError(f"top-k K must be between 1 and the number of classes ({num_classes}), got {topk}")
        super().__init__(num_classes, dtype, None if topk == num_classes else topk)

    @property
    def kept(self) -> int:
        return self.topk or self.num_classes

    def datasets(self, rows):
        out = {VALUES: ((*rows, self.kept), np.dtype(np.uint8)), SCALE: ((*rows, 2), np.dtype(np.float16))}
        if self.topk:
            bytes_ = -(-self.topk * index_bits(self.num_classes) // 8)
            out.update({INDICES: ((*rows, bytes_), np.dtype(np.uint8)), LOGSUMEXP: (tuple(rows), np.dtype(np.float32))})
        return out

    def encode(self, logits):
        import torch

        logits = logits.float()
        check_finite(logits)
        if self.topk:
            values, indices = torch.topk(logits, self.topk, dim=-1, sorted=True)
        else:
            values, indices = logits, None
        top = values.max(dim=-1, keepdim=True).values.half()
        low = values.min(dim=-1, keepdim=True).values
        step = ((top.float() - low) / 255).half().clamp_min(2**-14)  # float16 can hold it; 0 would not divide
        check_finite(torch.cat([top, step], dim=-1))
        q = torch.round((top.float() - values) / step.float()).clamp(0, 255).to(torch.uint8)
        out = {VALUES: q.cpu().numpy(), SCALE: torch.cat([top, step], dim=-1).cpu().numpy()}
        if indices is not None:
            out[INDICES] = pack_indices(indices.cpu().numpy(), index_bits(self.num_classes))
            out[LOGSUMEXP] = torch.logsumexp(logits, dim=-1).cpu().numpy().astype(np.float32)
        return out

    def _values(self, arrays) -> np.ndarray:
        scale = arrays[SCALE].astype(np.float32)
        return scale[..., :1] - arrays[VALUES].astype(np.float32) * scale[..., 1:]

    def dense(self, arrays):
        values = self._values(arrays)
        if not self.topk:
            return values
        indices = unpack_indices(arrays[INDICES], self.topk, index_bits(self.num_classes))
        return rebuild(values, indices, arrays[LOGSUMEXP].astype(np.float32), self.num_classes)

    def top1(self, arrays):
        if not self.topk:
            return arrays[VALUES].argmin(axis=-1)  # q = 0 is the top value
        return unpack_indices(arrays[INDICES], self.topk, index_bits(self.num_classes))[..., 0]

    def differences(self, arrays, fresh):
        import torch

        if not self.topk:
            return np.abs(self._values(arrays) - fresh).max(axis=-1)
        indices = unpack_indices(arrays[INDICES], self.topk, index_bits(self.num_classes))
        head = np.take_along_axis(fresh, indices, axis=-1)
        lse = torch.logsumexp(torch.from_numpy(fresh), dim=-1).numpy()
        return np.maximum(np.abs(self._values(arrays) - head).max(axis=-1), np.abs(arrays[LOGSUMEXP] - lse))

    def export(self, arrays):
        out = {"quant8_values": arrays[VALUES], "quant8_scale": arrays[SCALE].astype(np.float32)}
        if self.topk:
            out["quant8_indices"] = unpack_indices(arrays[INDICES], self.topk, index_bits(self.num_classes))
            out["quant8_logsumexp"] = arrays[LOGSUMEXP].astype(np.float32)
        return out

    def label(self, short=False):
        kept = f"top-{self.topk}" if self.topk else "all classes"
        return f"quant8 {kept}" if short else f"8-bit logits ({kept}) + float16 top and step"
