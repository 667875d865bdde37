"""Progress output for every long phase: a tqdm bar on a terminal, and elsewhere (SLURM logs, pipes,
CI) one plain line every `SOFTLABELS_PROGRESS_INTERVAL` seconds (default 30) instead of a stream of
carriage returns. `TQDM_DISABLE=1` or `enabled=False` (`--no-progress`, `--quiet`) silences both.

    for batch in progress.bar(loader, desc="teacher pass", unit="img", total=n): ...
    bars = progress.factory(enabled)           # bars(desc, total) -> a bar: what the store accepts
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable

from tqdm.auto import tqdm

INTERVAL_ENV = "SOFTLABELS_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0


def interval() -> float:
    """Seconds between two lines when stderr is not a terminal."""
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _disabled_by_env() -> bool:
    return os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false", "no")


def bar(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    initial: int = 0,
    unit_scale=False,
):
    """A tqdm bar on a terminal, a `LineProgress` elsewhere, a silent tqdm when disabled.

    The bar iterates `iterable` once: tqdm.auto's bar calls iter() on what it wraps when it is made and
    again when it is iterated, and each iter() of a DataLoader with persistent workers starts an epoch
    (the second drains the batches the first prefetched, decoded for nothing), so tqdm gets a generator.
    """
    if iterable is not None:
        total = _length(iterable) if total is None else total
        iterable = _once(iterable)
    if not enabled or _disabled_by_env():
        return tqdm(iterable, total=total, disable=True)
    stream = sys.stderr
    if stream.isatty():
        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            leave=leave,
            initial=initial,
            unit_scale=unit_scale,
            dynamic_ncols=True,
            file=stream,
        )
    scale = unit_scale if not isinstance(unit_scale, bool) else 1
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, stream=stream, scale=scale)


def factory(enabled: bool = True, unit: str = "row") -> Callable:
    """`bars(desc, total)`: what the store's long phases take to report progress."""

    def bars(desc: str, total: int):
        return bar(total=total, desc=desc, unit=unit, enabled=enabled)

    return bars


class LineProgress:
    """tqdm's interface (iterate, update, set_postfix, close) printing one line per interval and one at
    the end: `teacher pass: 1200/50000 img (2%), 41.3 img/s, 0:00:29 elapsed, 0:19:41 left`."""

    disable = False

    def __init__(self, iterable=None, *, total=None, desc="", unit="it", initial=0, stream=None, every=None, scale=1):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.scale = scale  # units per counted item (tqdm's unit_scale): views per image in a teacher pass
        self.total = total if total is not None else _length(iterable)
        self.n, self.initial = initial, initial
        self.stream = stream or sys.stderr
        self.every = interval() if every is None else every
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._print()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        self._print()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._print(final=True)

    def _print(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        done = self.n - self.initial
        rate = done * self.scale / elapsed if elapsed > 0 else 0.0
        n, total = self.n * self.scale, (self.total or 0) * self.scale
        count = f"{n}/{total}" if self.total else f"{n}"
        parts = [f"{self.desc}: {count} {self.unit}" + (f" ({self.n / self.total:.0%})" if self.total else "")]
        parts.append(f"{rate:.1f} {self.unit}/s")
        parts.append(f"{_clock(elapsed)} elapsed")
        if self.total and not final and rate > 0:
            parts.append(f"{_clock((total - n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts) + (" (done)" if final and self.total and self.n >= self.total else ""), file=self.stream)
        self.stream.flush()


def _once(iterable: Iterable):
    yield from iterable


def _length(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
