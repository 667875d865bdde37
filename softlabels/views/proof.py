"""Proving that a pipeline's views replay, before any teacher time is spent on them.

A stored view must be an exact function of the decoded sample and its stored parameters. User code
can break that without meaning to: drawing from Python's `random`, numpy's global RNG or torch's
default generator (a user augmentation runs with all three seeded from its view's parameters, so
that works), from a generator of its own, or from state that differs between processes. So the
build draws several views of several samples, makes each again with the global RNGs disturbed in
between, and once more in a fresh worker process that loads the augmentation anew (as DataLoader
workers do); any difference refuses the build, naming the sample, the view and the likely cause.
"""

from __future__ import annotations

import multiprocessing
import os

from softlabels.stopping import default_in_child
from softlabels.views.pipeline import ViewPipeline, same, stack
from softlabels.views.user import seeded_globals

SAMPLES = 4  # how many samples, and views of each, the proof makes
VIEWS = 3


def disturbed_globals():
    """Python's, numpy's and torch's global RNGs at fresh random states, restored afterwards."""
    return seeded_globals(int.from_bytes(os.urandom(4), "little"))


def make_views(pipeline: ViewPipeline, samples: list) -> list:
    """The views of `samples` [(x, params (V, P))], each made under disturbed global RNGs."""
    with disturbed_globals():
        return [stack([pipeline.view(_clone(x), row) for row in params]) for x, params in samples]


def prove_replay(pipeline: ViewPipeline, samples: list, names: list[str], in_worker: bool = True) -> None:
    """Refuse an augmentation whose views of `samples` [(x, params (V, P))] (named by `names`) come
    out different when made again, or in a fresh worker process."""
    first = make_views(pipeline, samples)
    _compare(pipeline, first, make_views(pipeline, samples), names, "when made again")
    if in_worker:
        _compare(pipeline, first, _in_fresh_worker(pipeline, samples), names, "in a fresh worker process")


def _compare(pipeline: ViewPipeline, first: list, again: list, names: list[str], where: str) -> None:
    for name, a, b in zip(names, first, again):
        for view in range(_count(a)):
            if not same(view_at(a, view), view_at(b, view)):
                raise ValueError(
                    f"augment {pipeline.augment.name} does not replay: view {view} of sample {name} came out "
                    f"different {where}, so the teacher's targets could not be paired with the views a student "
                    f"sees; it likely draws from unseeded randomness (a generator of its own, os.urandom, time) "
                    f"or process state: draw every random choice in `sample` from the rng it is given"
                )


def _in_fresh_worker(pipeline: ViewPipeline, samples: list) -> list:
    """The views made in a new process that loads the augmentation from its spec again (a forked one
    where the platform forks, as DataLoader workers are on Linux)."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(1, initializer=_start_worker) as pool:
        return pool.starmap(make_views, [(pipeline, samples)])[0]


def _start_worker() -> None:
    from softlabels.views import user

    default_in_child()  # the pool ends its worker with SIGTERM: a command's handler must not outlive the fork
    user._LOADED.clear()  # the pipeline arriving next loads the user's file as a new worker would


def _count(views) -> int:
    return len(next(iter(views.values()))) if isinstance(views, dict) else len(views)


def view_at(views, index: int):
    """View `index` of stacked views (a tensor, or a dict of tensors)."""
    return {k: v[index] for k, v in views.items()} if isinstance(views, dict) else views[index]


def _clone(x):
    return {k: _clone(v) for k, v in x.items()} if isinstance(x, dict) else x.clone()
