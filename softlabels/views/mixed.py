"""Mixed views: MixUp and CutMix cached the way Apple's dataset reinforcement stores them.

`--augment BASE+mixup[:ALPHA]` or `BASE+cutmix[:ALPHA]` (BASE a built-in: none, flip, cifar,
imagenet) makes each view from two samples: the sample's own BASE view and the BASE view of a
partner drawn from the whole dataset, mixed with weight lambda ~ Beta(ALPHA, ALPHA) (MixUp: a
per-pixel blend; CutMix: a box of the partner pasted in). The teacher labels the mixed image, so a
student replaying the view learns exactly what the teacher said about what it sees.

A view's stored parameters are the sample's BASE parameters, the partner's row, the partner's BASE
parameters and the mix (lambda as float32 bits, or the box): the partner's row and view are drawn
from the same (seed, key) stream as everything else, so the file does not depend on batch size,
workers or ranks, and a replay makes the view bit for bit by loading the partner again. `Mixed` is an
`Augment` like the others: its `draw` and `view` ask the pipeline (`ViewMaker`) for the partner.
Mixed views carry no single label: train on them with KD alone (`--alpha 1`) or `--loss hard`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from softlabels.views.augment import Augment, ViewMaker
from softlabels.views.geometric import AUGMENTS

MIXES = {"mixup": 0.2, "cutmix": 1.0}  # kind -> default Beta(alpha, alpha)
MIX_PARAMS = {"mixup": (("lam", "float32"),), "cutmix": tuple((n, "int32") for n in ("top", "left", "bottom", "right"))}


class Mixed(Augment):
    """MixUp or CutMix of a sample's BASE view with a partner sample's BASE view."""

    mixes = True

    def __init__(self, base: Augment, kind: str, alpha: float):
        if kind not in MIXES:
            raise ValueError(f"unknown mix {kind!r}; choose one of: {', '.join(MIXES)}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"the {kind} alpha must be a positive number, got {alpha:g}")
        self.base, self.kind, self.alpha = base, kind, float(alpha)
        self.name = f"{base.name}+{kind}:{alpha:g}"
        base_types = base.param_dtypes or ("int32",) * len(base.param_names)
        names, types = zip(*MIX_PARAMS[kind])
        self.param_names = (*base.param_names, "partner", *(f"partner_{n}" for n in base.param_names), *names)
        self.param_dtypes = (*base_types, "int32", *base_types, *types)
        self.resizes, self.takes_uint8 = base.resizes, base.takes_uint8
        self.description = (
            f"{kind} (Beta({alpha:g}, {alpha:g})) of this sample's {base.name} view with a random partner's"
        )

    def split(self, params) -> tuple[np.ndarray, int, np.ndarray, tuple]:
        """A stored row as (own BASE row, partner's row, partner's BASE row, the mix: (lambda,) or the box)."""
        row = np.asarray(params, dtype=np.int32).reshape(-1)
        if len(row) != len(self.param_names):
            raise ValueError(f"augment {self.name!r} takes {len(self.param_names)} parameters, got {len(row)}")
        p = len(self.base.param_names)
        values = self.decode(row)
        return row[:p], int(row[p]), row[p + 1 : 2 * p + 1], values[2 * p + 1 :]

    def join(self, own, partner: int, theirs, mix) -> np.ndarray:
        return self.encode([*self.base.decode(own), partner, *self.base.decode(theirs), *mix])

    def sample_mix(self, rng: np.random.Generator, image_size: int) -> tuple:
        lam = float(np.float32(rng.beta(self.alpha, self.alpha)))
        if self.kind == "mixup":
            return (lam,)
        cut = math.sqrt(1.0 - lam)  # the box covers 1 - lambda of the image (before clipping)
        h, w = int(image_size * cut), int(image_size * cut)
        cy, cx = int(rng.integers(0, image_size)), int(rng.integers(0, image_size))
        top, bottom = max(cy - h // 2, 0), min(cy + h // 2, image_size)
        left, right = max(cx - w // 2, 0), min(cx + w // 2, image_size)
        return (top, left, bottom, right)

    def mix(self, own: torch.Tensor, theirs: torch.Tensor, how: tuple) -> torch.Tensor:
        """Two float32 [0, 1] views of the same size mixed as `how` says (an exact function of it)."""
        if self.kind == "mixup":
            lam = torch.tensor(how[0], dtype=torch.float32)
            return own * lam + theirs * (1 - lam)
        top, left, bottom, right = (int(v) for v in how)
        size = own.shape[-1]
        if not (0 <= top <= bottom <= own.shape[-2] and 0 <= left <= right <= size):
            raise self._out_of_bounds(how, own.shape[-2], size)
        out = own.clone()
        out[..., top:bottom, left:right] = theirs[..., top:bottom, left:right]
        return out

    def mixed_fraction(self, how: tuple, image_size: int) -> float:
        """The weight of the sample's own view in the mix (lambda; for CutMix, the area outside the box)."""
        if self.kind == "mixup":
            return float(how[0])
        top, left, bottom, right = how
        return 1.0 - (bottom - top) * (right - left) / float(image_size * image_size)

    def draw(self, rng: np.random.Generator, x, maker: ViewMaker) -> np.ndarray:
        """The sample's BASE parameters, a partner row, the partner's BASE parameters (for its own
        size), then the mix: all drawn, in this order, from the sample's generator."""
        own = self.base.draw(rng, x, maker)
        partner = int(rng.integers(0, maker.partners))
        theirs = self.base.draw(rng, maker.partner(partner), maker)
        return self.join(own, partner, theirs, self.sample_mix(rng, maker.image_size))

    def view(self, x, row, maker: ViewMaker) -> torch.Tensor:
        """The BASE view of this sample and of the partner the row names, mixed as the row says."""
        own, partner, theirs, how = self.split(row)
        other = self.base.view(maker.partner(partner), theirs, maker)
        return self.mix(self.base.view(x, own, maker), other, how)


def parse_mixed(spec: str) -> Mixed | None:
    """`BASE+KIND[:ALPHA]` as a Mixed augmentation; None when `spec` names no mix."""
    if "+" not in spec:
        return None
    base, _, mix = spec.partition("+")
    kind, _, alpha = mix.partition(":")
    if base not in AUGMENTS:
        raise ValueError(f"mixed views take a built-in base augmentation ({', '.join(AUGMENTS)}), got {base!r}")
    if kind not in MIXES:
        raise ValueError(f"unknown mix {kind!r} in {spec!r}; choose one of: {', '.join(MIXES)}")
    try:
        value = float(alpha) if alpha else MIXES[kind]
    except ValueError:
        raise ValueError(f"the {kind} alpha in {spec!r} is not a number") from None
    return Mixed(AUGMENTS[base], kind, value)
