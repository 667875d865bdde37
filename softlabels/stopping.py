"""Stopping cleanly when a cluster asks: SIGTERM and SIGUSR1 (what SLURM sends before a pre-emption or
the time limit, `#SBATCH --signal=USR1@180`; under torchrun `TERM@180`, docs/clusters.md) set a flag;
long loops check it at a safe point (the build at its next block boundary, `trainer fit` after the
current step), save, and raise `Stopped`, which the command lines turn into exit status 75 ("stopped,
state saved: rerun with --resume").

The command lines install the handlers first thing (`command_signals`, in `clitools.CleanErrors`),
before any heavy import, and keep them to the last line: a signal during start-up (imports, loading,
a resume's re-check) is kept and stops the work at its first check (exit 75, resumable), and one
that arrives once the work is done (while a run writes its outputs, say) lets it finish: exit 0,
with a note naming the signal. A process never dies of SIGTERM mid-way (143).

DataLoader workers ignore both signals (`ignore_in_worker`): SLURM signals every process of a job
step, and a worker that died of it would break the batch the main process is about to finish. Such a
worker cannot be ended by SIGTERM either, which is what multiprocessing's own exit handler sends the
children still alive at interpreter exit before it waits for them: a loader left unclosed (its
iterator held by a stored traceback) would hang the exit forever. `_end_lingering_workers` kills those
first.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import multiprocessing.util  # registers multiprocessing's exit handler before ours: ours runs first
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_STOPPED = 75  # EX_TEMPFAIL: try again (with --resume)


class Stopped(RuntimeError):
    """The run stopped on a signal after saving what it had done; the message says how to go on."""

    exit_code = EXIT_STOPPED


class StopRequest:
    """Which stop signal arrived (None: none yet)."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "nothing"

    def _handle(self, signum, frame) -> None:
        self.signal = signum


_COMMAND: StopRequest | None = None  # the request of the command running in this process, if any


@contextlib.contextmanager
def command_signals():
    """A whole command: from here on SIGTERM and SIGUSR1 set the yielded request, which every
    `stop_on_signals` block inside shares (a signal that came earlier is already in it)."""
    global _COMMAND
    if _COMMAND is not None or threading.current_thread() is not threading.main_thread():
        yield _COMMAND or StopRequest()
        return
    request = StopRequest()
    previous = {signum: signal.signal(signum, request._handle) for signum in STOP_SIGNALS}
    _COMMAND = request
    try:
        yield request
    finally:
        _COMMAND = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def command_stop() -> StopRequest | None:
    """The running command's request (None outside a command)."""
    return _COMMAND


def default_in_child() -> None:
    """A helper process's initializer: die of SIGTERM as usual (its parent ends it that way)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


@contextlib.contextmanager
def stop_on_signals(enabled: bool = True):
    """Within the block, SIGTERM and SIGUSR1 set the yielded request instead of ending the process
    (inside a command: the command's request, which may hold a signal that came during start-up).

    Handlers are installed only from the main thread (Python's rule) and restored afterwards.
    """
    if enabled and _COMMAND is not None:
        yield _COMMAND
        return
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.signal(signum, request._handle) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def ignore_in_worker(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: the main process decides when to stop."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _end_lingering_workers() -> None:
    """At exit, kill the daemonic children (loader workers) that are still alive: they ignore the
    SIGTERM multiprocessing would send them, and it would then wait for them forever."""
    lingering = [child for child in multiprocessing.active_children() if child.daemon]
    if not lingering:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would raise for the killed worker
    for child in lingering:
        child.kill()
        child.join(timeout=5)


atexit.register(_end_lingering_workers)  # atexit runs handlers last-registered first
