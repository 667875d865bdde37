"""The CPU thread default: every core other processes leave, less the loader workers' share only when the
loop waits for its batches; never more than torch's own limit; an explicit count is never changed.
The decisions are tested from given measurements (no timing)."""

import itertools
import multiprocessing
import os

import pytest
import torch

from softlabels import threads
from softlabels.runtime import cpu_threads

BUSY, WAITING = 0.0, 0.5  # the loop never waits (compute sets the pace); it waits half the time


@pytest.mark.parametrize(
    "cores, other, workers, waiting, expected",
    [
        (2, 0.0, 0.1, BUSY, 2),  # 2 light workers on CIFAR JPEGs: every core (was 1: cores - workers)
        (2, 0.0, 0.9, BUSY, 2),  # 1 busy ImageNet-size worker running ahead of the loop: still every core
        (2, 0.0, 0.9, WAITING, 1),  # the same worker as the bottleneck: its core comes off
        (2, 0.0, 1.8, WAITING, 1),  # a loader-bound run: never below one thread
        (2, 0.3, 0.0, BUSY, 2),  # a light neighbour: the core it barely uses is worth a thread
        (2, 0.67, 0.0, BUSY, 1),  # one busy process beside 2 threads (it gets 2/3 of a core): back to 1
        (2, 1.0, 0.1, BUSY, 1),  # one busy process: the other core
        (2, 2.0, 0.1, BUSY, 1),  # two other busy processes: one thread, not two fighting them
        (2, 3.5, 0.0, BUSY, 1),
        (8, 2.4, 0.5, BUSY, 6),
        (8, 2.4, 2.0, WAITING, 4),
        (8, 2.6, 0.0, BUSY, 5),
    ],
)
def test_threads_are_the_cores_left_to_the_job(cores, other, workers, waiting, expected):
    assert threads.choose_threads(cores, other, workers, waiting) == expected


def test_threads_never_exceed_the_cores_other_processes_leave():
    for cores, tenths, workers, waiting in itertools.product(range(1, 17), range(0, 200), (0.0, 1.0, 3.0), (0, 0.5)):
        other = tenths / 10
        chosen = threads.choose_threads(cores, other, workers, waiting)
        assert 1 <= chosen <= max(1, cores - other + 0.5)
        if waiting >= threads.LOADER_BOUND:
            assert chosen <= max(1, cores - other - workers + 0.5)


STAT = """cpu  300 40 60 500 10 0 5 70 0 0
cpu0 100 10 20 200 5 0 2 30 0 0
cpu1 200 30 40 300 5 0 3 40 0 0
intr 12345 0 0
ctxt 999
"""


def test_machine_jiffies_count_the_allowed_cpus_niced_time_as_busy_and_steal_nowhere():
    assert threads.cpu_jiffies(STAT, {0, 1}) == (405, 405 + 500 + 10)
    assert threads.cpu_jiffies(STAT, {1}) == (200 + 30 + 40 + 3, 273 + 300 + 5)


def test_process_jiffies_are_user_plus_system_whatever_the_command_name():
    fields = ["S"] + ["0"] * 10 + ["17", "5"] + ["0"] * 30
    assert threads.process_jiffies("123 (pt worker) x) " + " ".join(fields)) == 22


class FakeLoad:
    cores = 2

    def __init__(self, other, workers):
        self.other, self.workers = other, workers

    def sample(self):
        return self.other, self.workers


@pytest.fixture
def governor():
    before = torch.get_num_threads()
    governor = threads.ThreadGovernor(1, explicit=False, limit=2)
    threads._active.append(governor)
    yield governor
    threads._active.remove(governor)
    torch.set_num_threads(before)


def test_the_first_batch_decides_from_other_processes_alone(governor):
    governor.load = FakeLoad(other=0.0, workers=1.0)  # the workers' start-up burst
    batches = threads.paced(iter(range(3)))
    assert next(batches) == 0
    assert torch.get_num_threads() == 2 and governor.next_check is not None


def test_the_governor_follows_who_sets_the_pace(governor):
    governor.load = FakeLoad(other=0.0, workers=0.9)
    governor.batch_ready(None)
    assert torch.get_num_threads() == 2  # compute-bound: the worker fills the gaps
    governor.since, governor.next_check = governor.since - 1.0, 0.0  # a one-second interval ...
    governor.batch_ready(0.6)  # ... of which the loop waited 0.6 s for a batch
    assert torch.get_num_threads() == 1
    governor.since, governor.next_check = governor.since - 1.0, 0.0
    governor.batch_ready(0.0)
    assert torch.get_num_threads() == 2
    governor.load.other, governor.next_check = 1.5, 0.0  # a busy neighbour arrived
    governor.batch_ready(0.0)
    assert torch.get_num_threads() == 1


def test_waits_are_counted_from_the_second_batch_and_decisions_wait_for_the_interval(governor):
    governor.load = FakeLoad(other=0.0, workers=0.0)
    governor.batch_ready(None)
    governor.waited = 0.0
    governor.batch_ready(5.0)  # within the interval: only counted
    assert governor.waited == 5.0 and torch.get_num_threads() == 2
    list(threads.paced(iter([1])))  # a new epoch's first batch: the workers' start-up is not counted
    assert governor.waited == 5.0


def test_training_holds_its_threads_after_the_second_decision():
    before = torch.get_num_threads()
    try:
        governor = threads.ThreadGovernor(1, explicit=False, limit=2, hold=True)
        governor.load = FakeLoad(other=0.0, workers=0.0)
        governor.batch_ready(None)  # the first batch: other processes alone
        governor.since, governor.next_check = governor.since - 1.0, 0.0
        governor.load.other = 1.5  # a busy neighbour: the second decision, held
        governor.batch_ready(0.0)
        assert governor.held and torch.get_num_threads() == 1
        governor.next_check = 0.0
        governor.batch_ready(0.0)  # the neighbour is gone, the count stays
        assert torch.get_num_threads() == 1
        governor.hold(4)  # a resumed run's saved count, within torch's limit
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_saved_count_does_not_override_an_explicit_one():
    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu"), workers=0, threads=1, hold=True):
        threads.hold(2)
        assert torch.get_num_threads() == 1 and threads.held_threads() == 1
    assert torch.get_num_threads() == before


def test_torchs_limit_wins_over_idle_cores():
    before = torch.get_num_threads()
    try:
        governor = threads.ThreadGovernor(1, explicit=False, limit=1)
        governor.load = FakeLoad(other=0.0, workers=0.0)
        governor.batch_ready(None)
        assert torch.get_num_threads() == 1  # OMP_NUM_THREADS=1 (torchrun) stays 1
    finally:
        torch.set_num_threads(before)


def test_an_explicit_thread_count_is_never_changed():
    before = torch.get_num_threads()
    with cpu_threads(torch.device("cpu"), workers=0, threads=1):
        governor = threads._active[-1]
        assert list(threads.paced(range(3))) == [0, 1, 2]
        governor.batch_ready(0.0)
        assert governor.load is None and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _burn(started, release):
    while os.times().user + os.times().system < 0.2:  # a fifth of a second of CPU, however slow the machine
        pass
    started.set()
    release.wait(30)


def test_the_loader_workers_cpu_is_told_apart_from_other_processes():
    load = threads.CpuLoad()
    context = multiprocessing.get_context("fork")
    started, release = context.Event(), context.Event()
    child = context.Process(target=_burn, args=(started, release))
    child.start()
    try:
        assert started.wait(60)
        other, workers = load.sample()
    finally:
        release.set()
        child.join()
    assert workers > 0.0  # a child's jiffies are the workers', not another process's
    assert 0.0 <= other <= load.cores
