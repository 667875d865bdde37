"""Views: how a decoded sample becomes the exact input a model saw, drawn once and replayed bit for bit.

    augment.py    the `Augment` contract (`sample`/`apply`, or `draw`/`view` with a partner sample),
                  `view_rng`
    geometric.py  the built-in augmentations and their registry `AUGMENTS`
    mixed.py      MixUp and CutMix of two samples' views (`BASE+mixup`, `BASE+cutmix`)
    user.py       a user's `FILE.py:NAME`: an `Augment`, or a torchvision v2 pipeline
    specs.py      `parse_augment`: the one place `--augment` text becomes an `Augment`; its record
    pixels.py     decoding to pixels, an eval transform's resize and crop, fitting to the input size
    pipeline.py   `ViewPipeline` (decode -> view -> input size) and `Normalize`
    replay.py     `replay_view`: the one function that makes a stored view again

A new augmentation is an `Augment` subclass: a built-in joins `AUGMENTS`, anything else is a
user's file. Nothing outside this package makes a view.
"""

from softlabels.views.augment import Augment, ViewMaker, random_view_rng, view_rng
from softlabels.views.geometric import AUGMENTS, CifarCrop, Flip, ImagenetCrop, NoAugment
from softlabels.views.mixed import MIXES, Mixed
from softlabels.views.pipeline import (
    Normalize,
    ViewPipeline,
    flatten_views,
    nonfinite_rows,
    random_view,
    same,
    stack,
    to_channels_last,
    to_device,
)
from softlabels.views.pixels import eval_fit, fit_size, to_pixels, to_tensor
from softlabels.views.replay import replay_pipeline, replay_view
from softlabels.views.specs import augment_record, parse_augment, recorded_augment, require_unchanged
from softlabels.views.user import SeededPipeline, UserAugment

__all__ = [
    "AUGMENTS",
    "MIXES",
    "Augment",
    "CifarCrop",
    "Flip",
    "ImagenetCrop",
    "Mixed",
    "NoAugment",
    "Normalize",
    "SeededPipeline",
    "UserAugment",
    "ViewMaker",
    "ViewPipeline",
    "augment_record",
    "eval_fit",
    "fit_size",
    "flatten_views",
    "parse_augment",
    "random_view",
    "random_view_rng",
    "recorded_augment",
    "replay_pipeline",
    "replay_view",
    "require_unchanged",
    "same",
    "stack",
    "to_channels_last",
    "to_device",
    "nonfinite_rows",
    "to_pixels",
    "to_tensor",
    "view_rng",
]
