"""`logits`: every class's logit, float16 or float32: exact at every temperature, C values a view."""

from __future__ import annotations

import numpy as np

from softlabels.store.modes.base import StorageMode, check_finite

LOGITS = "logits"


class FullLogits(StorageMode):
    name = "logits"
    description = "every logit of every view"

    def datasets(self, rows):
        return {LOGITS: ((*rows, self.num_classes), np.dtype(self.dtype))}

    def encode(self, logits):
        import torch

        logits = logits.float()
        check_finite(logits)
        stored = logits.to(getattr(torch, self.dtype))
        check_finite(stored)  # float16 overflows past 65504
        return {LOGITS: stored.cpu().numpy()}

    def dense(self, arrays):
        return arrays[LOGITS].astype(np.float32)

    def top1(self, arrays):
        return arrays[LOGITS].argmax(axis=-1)

    def differences(self, arrays, fresh):
        return np.abs(arrays[LOGITS].astype(np.float32) - fresh).max(axis=-1)

    def export(self, arrays):
        return {"logits": self.dense(arrays)}

    def label(self, short=False):
        return f"{self.dtype} full" if short else f"full logits, {self.dtype}"
