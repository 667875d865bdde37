"""CPU intra-op threads from measurements: the cores nothing else is using.

A fixed rule (cores minus loader workers) leaves a core idle when the workers are light (2 cores,
2 workers decoding small JPEGs: the teacher ran with 1 thread at 0.71-0.87x a plain loop with torch's
default threads), and torch's default (every core) is brutal beside busy processes (2 threads per
process with two other busy processes on 2 cores ran 10x slower than 1). So the governor starts from
the fixed rule, then measures, over each interval, how many cores are busy outside this process
(the loader workers and everything else on the machine: /proc/stat minus /proc/self/stat) and sets
the threads to the cores left idle (`choose_threads`), re-checking every few seconds from the loop
that calls `tick()`. An explicit thread count is never changed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

FIRST_CHECK_S = 1.0  # after the loaders' first burst
CHECK_EVERY_S = 3.0


def idle_cores(cores: int, busy_elsewhere: float) -> int:
    """Whole cores left idle when `busy_elsewhere` cores' worth of work runs outside this process: a
    core counts when at least half of it is free."""
    return max(0, min(cores, int(cores - busy_elsewhere + 0.5)))


def choose_threads(cores: int, busy_elsewhere: float) -> int:
    """Intra-op threads: the idle cores, at least one."""
    return max(1, idle_cores(cores, busy_elsewhere))


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _own_jiffies() -> int:
    """User + system jiffies of this process (all its threads)."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


class CpuLoad:
    """Cores busy outside this process between two `sample()` calls (Linux /proc)."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.last = self._read()

    @staticmethod
    def _read() -> tuple[int, int, int]:
        busy, total = _machine_jiffies()
        return busy, total, _own_jiffies()

    def sample(self) -> float:
        now = self._read()
        busy, total, own = (b - a for a, b in zip(self.last, now))
        self.last = now
        if total <= 0:
            return 0.0
        return max(0.0, (busy - own) / total * self.cores)


class ThreadGovernor:
    """Sets torch's intra-op threads to the idle cores (at most `limit`: torch's own setting, which
    OMP_NUM_THREADS or torchrun may have lowered), re-measured every few seconds by `tick()`."""

    def __init__(self, initial: int, explicit: bool, limit: int) -> None:
        self.explicit, self.limit = explicit, limit
        self.load: CpuLoad | None = None
        self.next_check = time.monotonic() + FIRST_CHECK_S
        torch.set_num_threads(initial)
        if not explicit:
            try:
                self.load = CpuLoad()
            except (OSError, ValueError, IndexError):  # no /proc (not Linux): keep the initial rule
                self.load = None

    def tick(self) -> None:
        """Called between batches: re-measure when the interval has passed."""
        if self.load is None or time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + CHECK_EVERY_S
        threads = min(self.limit, choose_threads(self.load.cores, self.load.sample()))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)


_active: list[ThreadGovernor] = []


def tick() -> None:
    """Let the active governor (inside `softlabels.runtime.cpu_threads`) re-check the idle cores."""
    if _active:
        _active[-1].tick()
