"""CPU intra-op threads from measurements: every core other work leaves to this job.

Two failures to avoid, both measured on 2 cores (../shared/FINDINGS.md):
- too few threads: the fixed rule (cores minus loader workers) gave the teacher 1 thread beside
  light workers, 0.71-0.87x a plain loop at torch's default threads;
- too many: 2 threads per process beside two other busy processes ran 10x slower than 1.
The loader's workers are not "other work": they feed this loop and run ahead into the prefetch
queue, so while a batch is ready whenever the loop asks, the loop gets every core that other
processes leave, and the workers fill the gaps (2 threads beside one busy ImageNet-size decode
worker ran 1.46x as fast as 1). Only when the loop waits for its batches (the loader sets the pace)
do the workers' cores come off. So the governor measures, over each interval (Linux /proc): the
cores busy in other processes, the cores this process's children (the loader workers) use, and the
share of the interval the loop waited for batches (`paced`), and sets the threads by
`choose_threads`. Niced processes count as busy: beside a crowd of niced processes (nice 5 to
19, with under half a core of unniced work) 2 threads ran the CIFAR teacher pass at 26 images/s
where 1 thread ran 68: their weights add up, and every preemption stalls the threads at a barrier.
The first decision comes with the first batch (other processes only: the workers' start-up burst
says nothing about their pace), then one every second. An explicit thread count is never changed.

Training holds its threads after the second decision (`hold=True`): a thread count changes the order
of a backward pass's sums (small_cnn's weights differ in the last bit after 5 steps at 1 and 2
threads; cifar_resnet20's by 1e-3), so a run whose threads moved with the machine's load could never
be resumed bit for bit. The held count is saved with the run's checkpoints and a resumed run keeps
it (`hold`). A teacher's forward pass gave the same bits at 1 and 2 threads, so the build follows
the load throughout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import torch

CHECK_EVERY_S = 1.0
LOADER_BOUND = 0.1  # the loop waited for batches this share of the time: the loader sets the pace

T = TypeVar("T")


def choose_threads(cores: int, other: float, workers: float, waiting: float) -> int:
    """Intra-op threads: the cores that `other` processes leave free, less the loader `workers`' use when
    the loop spent a `waiting` share of its time waiting for them; a core counts when at least half
    of it is free; at least one."""
    free = cores - other
    if waiting >= LOADER_BOUND:
        free -= workers
    return max(1, min(cores, int(free + 0.5)))


def cpu_jiffies(stat: str, cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies of `cpus` since boot, from /proc/stat's text; steal time is left out of both
    (the hypervisor's, not a process's)."""
    busy = total = 0
    for line in stat.splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        user, nice, system, idle, iowait, irq, softirq = (int(v) for v in values[:7])
        working = user + nice + system + irq + softirq
        busy += working
        total += working + idle + iowait
    return busy, total


def process_jiffies(stat: str) -> int:
    """User + system jiffies of a process (all its threads), from its /proc/PID/stat text."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def _children() -> dict[int, int]:
    """pid -> jiffies of this process's children (its DataLoader workers)."""
    out, pids = {}, []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except FileNotFoundError:  # a thread that ended since the listing
            pass
    for pid in pids:
        try:
            out[int(pid)] = process_jiffies(Path(f"/proc/{pid}/stat").read_text())
        except OSError:  # a child that ended since the listing
            pass
    return out


class CpuLoad:
    """Cores busy between two `sample()` calls (Linux /proc): in other processes, and in this process's
    children. Only the CPUs this process may run on count (taskset, cpusets)."""

    def __init__(self) -> None:
        self.cpus = os.sched_getaffinity(0)
        self.cores = len(self.cpus)
        self.last = self._read()

    def _read(self) -> tuple[int, int, int, dict[int, int]]:
        busy, total = cpu_jiffies(Path("/proc/stat").read_text(), self.cpus)
        return busy, total, process_jiffies(Path("/proc/self/stat").read_text()), _children()

    def sample(self) -> tuple[float, float]:
        """(cores busy in other processes, cores used by this process's children) since the last call."""
        now = self._read()
        (busy, total, own, children), (busy0, total0, own0, children0) = now, self.last
        self.last = now
        if total <= total0:
            return 0.0, 0.0
        scale = self.cores / (total - total0)
        workers = sum(max(0, j - children0.get(pid, 0)) for pid, j in children.items())
        return max(0, busy - busy0 - (own - own0) - workers) * scale, workers * scale


class ThreadGovernor:
    """Sets torch's intra-op threads by `choose_threads` (at most `limit`: torch's own setting, which
    OMP_NUM_THREADS or torchrun may have lowered), from the measurements `paced` reports."""

    def __init__(self, initial: int, explicit: bool, limit: int, hold: bool = False) -> None:
        self.limit, self.explicit = limit, explicit
        self.decisions_left = 2 if hold else None  # None: decide every second for as long as it runs
        self.load: CpuLoad | None = None
        if not explicit:
            try:
                self.load = CpuLoad()
            except (OSError, ValueError, IndexError, AttributeError):  # no /proc (not Linux): keep `initial`
                self.load = None
        self.next_check: float | None = None  # None: decide with the first batch
        self.waited, self.since = 0.0, time.monotonic()
        torch.set_num_threads(initial)

    def batch_ready(self, waited: float | None) -> None:
        """A batch arrived after the loop `waited` seconds for it (None: an iteration's first batch,
        whose wait is the workers' start-up, not their pace)."""
        if self.load is None:
            return
        now = time.monotonic()
        self.waited += waited or 0.0
        if self.next_check is None or now >= self.next_check:
            self.decide(now)

    def decide(self, now: float) -> None:
        """Measure the interval since the last decision and set the threads for the next one."""
        assert self.load is not None
        other, workers = self.load.sample()
        waiting = self.waited / (now - self.since) if now > self.since else 0.0
        threads = min(self.limit, choose_threads(self.load.cores, other, workers, waiting))
        self.waited, self.since, self.next_check = 0.0, now, now + CHECK_EVERY_S
        if self.decisions_left is not None:
            self.decisions_left -= 1
            if not self.decisions_left:
                self.load = None  # held from here on
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)

    @property
    def held(self) -> bool:
        """Whether the threads no longer change: explicit, held after the last decision, or no /proc."""
        return self.load is None

    def hold(self, threads: int) -> None:
        """Keep `threads` from now on (a resumed run continues with the count it was trained with)."""
        self.load = None
        torch.set_num_threads(max(1, min(self.limit, threads)))


def held_threads() -> int | None:
    """The intra-op threads a training run holds (saved with its checkpoints), or None while the governor
    still decides (or outside `softlabels.runtime.cpu_threads`: on a GPU)."""
    governor = _active[-1] if _active else None
    return torch.get_num_threads() if governor is not None and governor.held else None


def hold(threads: int | None) -> None:
    """Hold `threads` (a resumed run's saved count) in the active governor, unless the user gave
    --threads (an explicit count wins) or there is no governor (a GPU run)."""
    governor = _active[-1] if _active else None
    if threads is not None and governor is not None and not governor.explicit:
        governor.hold(threads)


_active: list[ThreadGovernor] = []


def paced(batches: Iterable[T]) -> Iterator[T]:
    """`batches`, telling the active governor (inside `softlabels.runtime.cpu_threads`) how long the loop
    waited for each one, so the threads follow the cores the loader and the machine leave idle."""
    governor = _active[-1] if _active else None
    if governor is None or governor.load is None:
        yield from batches
        return
    batches = iter(batches)
    first = True
    while True:
        asked = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        governor.batch_ready(None if first else time.perf_counter() - asked)
        first = False
        yield batch
