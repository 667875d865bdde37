"""Augmentations from a user's file, replayed exactly: `--augment FILE.py:NAME`.

NAME is either
  - an `Augment` (a subclass, or an instance, or a function returning one): the same contract as
    the built-ins (`sample`/`apply`, or `draw`/`view` for views of two samples), with int32 or
    float32 parameters;
  - a function returning a torchvision v2 transform (e.g. `v2.Compose([v2.RandAugment(), ...])`):
    each view stores one int32 seed, and the build and every replay run the pipeline on the uint8
    image under torch's, Python's and numpy's global RNGs seeded from it, isolated from the caller's
    RNG state, so the worker count, batch size and rank do not matter.

An `Augment`'s `apply` (and `view`) runs the same way, with the three global RNGs seeded from its
view's stored parameters (`seeded_globals`): code that draws from them replays too. Whether a
user's views replay is proven before a build spends teacher time (`softlabels.views.proof`).

A cache records the augmentation's identity (the SHA-256 of the file and the object's `repr`);
replaying with a changed augmentation is refused (`identity_differences`).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import random
import re
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from softlabels.userfiles import import_user_file
from softlabels.views.augment import Augment

USER_SPEC = re.compile(r"^(?P<file>.+\.py):(?P<name>[A-Za-z_]\w*)$")
_LOADED: dict[str, Augment] = {}


def is_user_spec(spec: str) -> bool:
    return USER_SPEC.match(spec) is not None


def load_user_augment(spec: str) -> Augment:
    """The augmentation `FILE.py:NAME` names (loaded once per process)."""
    if spec not in _LOADED:
        _LOADED[spec] = _load(spec)
    return _LOADED[spec]


def _load(spec: str) -> Augment:
    match = USER_SPEC.match(spec)
    assert match is not None
    path = Path(match["file"]).expanduser()
    module = import_user_file(path, "augment")
    found = getattr(module, match["name"], None)
    if found is None:
        raise ValueError(f"{path} does not define {match['name']!r}")
    ready = isinstance(found, (Augment, v2.Transform))
    made = found if ready else found() if inspect.isclass(found) or callable(found) else found
    source = hashlib.sha256(path.read_bytes()).hexdigest()
    if isinstance(made, Augment):
        return UserAugment(made, spec, source)

    if isinstance(made, v2.Transform):
        return SeededPipeline(made, spec, source)
    raise ValueError(
        f"{spec} gave a {type(made).__name__}: name an Augment (subclass, instance or factory) or a "
        f"function that returns a torchvision v2 transform (e.g. v2.Compose([...]))"
    )


class UserAugment(Augment):
    """A user's `Augment`, named by its spec and identified by its file's hash and its repr."""

    def __init__(self, inner: Augment, spec: str, source_sha256: str):
        self.inner, self.spec, self.source_sha256 = inner, spec, source_sha256
        self.name = spec
        self.param_names = tuple(inner.param_names)
        self.param_dtypes = tuple(inner.param_dtypes) or ("int32",) * len(self.param_names)
        if len(self.param_dtypes) != len(self.param_names) or set(self.param_dtypes) - {"int32", "float32"}:
            raise ValueError(f"{spec}: param_dtypes must give int32 or float32 for each of {self.param_names}")
        self.description = inner.description or type(inner).__name__
        self.resizes, self.mixes = inner.resizes, inner.mixes

    def sample(self, rng, height, width, image_size):
        return self.inner.sample(rng, height, width, image_size)

    def apply(self, x, params, image_size):
        with seeded_globals(row_seed(params)):
            return self.inner.apply(x, self.decode(params), image_size)

    def draw(self, rng, x, maker):
        if _overrides(self.inner, "draw"):  # the user's own draw (a partner sample, say): its stored row
            return np.asarray(self.inner.draw(rng, x, maker), dtype=np.int32)
        return super().draw(rng, x, maker)

    def view(self, x, row, maker):
        if _overrides(self.inner, "view"):
            with seeded_globals(row_seed(row)):
                return self.inner.view(x, row, maker)
        return super().view(x, row, maker)

    def identity(self) -> dict:
        return {"source": self.spec, "source_sha256": self.source_sha256, "repr": repr(self.inner)}

    def __reduce__(self):  # workers (spawn too) load it again from the spec
        return load_user_augment, (self.spec,)


def _overrides(augment: Augment, hook: str) -> bool:
    return getattr(type(augment), hook) is not getattr(Augment, hook)


class SeededPipeline(Augment):
    """A torchvision v2 transform replayed from one stored seed per view (on the uint8 pixels)."""

    param_names = ("seed",)
    takes_uint8 = True
    description = "a torchvision v2 pipeline, replayed from one seed per view"

    def __init__(self, transform, spec: str, source_sha256: str):
        self.transform, self.spec, self.source_sha256 = transform, spec, source_sha256
        self.name = spec

    def sample(self, rng, height, width, image_size):
        return (int(rng.integers(0, 2**31 - 1)),)

    def apply(self, x, params, image_size):
        (seed,) = self._unpack(params)
        pixels = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)  # exactly the decoded pixels
        with seeded_globals(seed):
            out = torch.as_tensor(self.transform(tv_tensors.Image(pixels)))
        return out.float().div_(255) if out.dtype == torch.uint8 else out.float()

    def identity(self) -> dict:
        return {"source": self.spec, "source_sha256": self.source_sha256, "repr": repr(self.transform)}

    def __reduce__(self):
        return load_user_augment, (self.spec,)


@contextlib.contextmanager
def seeded_globals(seed: int):
    """Python's, numpy's and torch's global RNGs seeded with `seed` while user code makes a view, and
    the caller's states restored afterwards."""
    python, legacy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(legacy)


def row_seed(row) -> int:
    """A seed that is a function of one view's stored parameters alone."""
    digest = hashlib.sha256(np.asarray(row, dtype=np.int32).tobytes()).digest()
    return int.from_bytes(digest[:4], "little")


def identity_differences(recorded: dict, augment: Augment) -> list[str]:
    """How the augmentation that would replay a cache differs from the one that built it."""
    current = augment.identity()
    return [
        f"{key}: cache has {recorded.get(key)!r}, now {current.get(key)!r}"
        for key in ("source_sha256", "repr")
        if recorded.get(key) != current.get(key)
    ]
