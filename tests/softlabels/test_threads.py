"""The CPU thread default: the idle cores, measured; never more threads than idle cores (at least one),
never more than torch's own limit, and an explicit count is never changed."""

import itertools

import pytest
import torch

from softlabels import threads
from softlabels.runtime import cpu_threads


@pytest.mark.parametrize(
    "cores, busy, expected",
    [
        (2, 0.0, 2),  # nothing else running: every core
        (2, 0.3, 2),  # a light loader worker: the core it barely uses is worth a thread
        (2, 1.0, 1),  # one busy worker (a loader-bound run): the other core
        (2, 2.0, 1),  # two other busy processes: one thread, not two fighting them
        (2, 3.5, 1),
        (8, 2.4, 6),
        (8, 2.6, 5),
    ],
)
def test_threads_are_the_idle_cores(cores, busy, expected):
    assert threads.choose_threads(cores, busy) == expected


def test_threads_never_exceed_the_idle_cores():
    for cores, tenths in itertools.product(range(1, 17), range(0, 200)):
        busy = tenths / 10
        chosen = threads.choose_threads(cores, busy)
        assert 1 <= chosen <= max(1, threads.idle_cores(cores, busy))
        assert threads.idle_cores(cores, busy) <= max(0, cores - busy + 0.5)


class FakeLoad:
    def __init__(self, cores, busy):
        self.cores, self.busy = cores, busy

    def sample(self):
        return self.busy


def test_the_governor_follows_the_measured_load_within_torchs_limit(monkeypatch):
    before = torch.get_num_threads()
    try:
        governor = threads.ThreadGovernor(1, explicit=False, limit=4)
        governor.load, governor.next_check = FakeLoad(8, 5.0), 0.0
        governor.tick()
        assert torch.get_num_threads() == 3
        governor.load.busy, governor.next_check = 0.0, 0.0
        governor.tick()
        assert torch.get_num_threads() == 4  # torch's limit (OMP_NUM_THREADS, torchrun) wins over idle cores
    finally:
        torch.set_num_threads(before)


def test_an_explicit_thread_count_is_never_changed():
    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu"), workers=0, threads=1):
        governor = threads._active[-1]
        governor.next_check = 0.0
        threads.tick()
        assert governor.load is None and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_load_outside_this_process_is_measured():
    load = threads.CpuLoad()
    sum(i * i for i in range(200_000))  # busy in this process: not counted as elsewhere
    assert 0.0 <= load.sample() <= load.cores
