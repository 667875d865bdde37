"""Replaying a cache's stored views: the one place a stored view is made again, for the trainer's
dataset (`softlabels.replay.ReplayDataset`), `Cache.replay` and `softlabels verify --recompute`.

    pipeline = replay_pipeline(info, source)            # the cache's input and augmentation
    x = pipeline.decode(source.load(index))             # once per sample
    image = replay_view(pipeline, x, rows.view(v))      # view v, as the teacher saw it
"""

from __future__ import annotations

import torch

from softlabels import store
from softlabels.views.pipeline import ViewPipeline
from softlabels.views.specs import recorded_augment, require_unchanged


def replay_pipeline(info: store.CacheInfo, source, allow_changed: bool = False) -> ViewPipeline:
    """The pipeline that remakes a cache's views: its recorded input and augmentation, partners of
    mixed views loaded from `source`. A user augmentation changed since the build is refused (saying
    what differs) unless `allow_changed`."""
    augment = recorded_augment(info.augment)
    if not allow_changed:
        require_unchanged(info.augment, augment, info.path)
    return ViewPipeline(info.input, augment, source)


def replay_view(pipeline: ViewPipeline, x, rows: store.Rows) -> torch.Tensor:
    """The stored view that one view's `rows` describe, of decoded sample `x`: float32 (C, S, S) in
    [0, 1], bit for bit the build's (a cache without stored parameters: the plain view)."""
    return pipeline.view(x, rows.params if rows.params is not None else ())
