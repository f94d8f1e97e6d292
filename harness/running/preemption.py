"""Stopping a run when the scheduler asks (SIGTERM: scancel, a time limit, preemption; SIGUSR1: what Slurm's
`--signal` sends ahead of the limit): the signal only raises a flag; training looks at it after each optimizer
step, keeps the seed's whole state (harness.running.checkpoint) and raises `Preempted`. The trial or seed is
given back without counting a death, and the command exits with `EXIT_CODE`; the same command resumes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator

log = logging.getLogger(__name__)

# EX_TEMPFAIL (sysexits.h): a temporary failure, the same command is meant to be run again. Not 143 (128 +
# SIGTERM), which says the process was killed, nor 130 (Ctrl+C).
EXIT_CODE = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_requested = threading.Event()


class Preempted(BaseException):
    """The process was asked to stop (SIGTERM or SIGUSR1) and did, at a step's end. Not an Exception: no handler
    of failures may count it as one; like Ctrl+C it is nobody's fault, and what was running is given back."""


def requested() -> bool:
    return _requested.is_set()


def clear() -> None:
    """A command starts with the flag lowered (the tests run several commands in one process)."""
    _requested.clear()


def request() -> None:
    """Raise the flag as a signal would (the tests' deterministic stop uses this)."""
    _requested.set()


def stop_if_requested(where: str) -> None:
    """Between pieces of work: stop before starting another trial or seed."""
    if requested():
        raise Preempted(where)


@contextlib.contextmanager
def handling_signals(forward_to: Callable[[], Iterable[int]] = tuple) -> Iterator[None]:
    """While the command runs: SIGTERM and SIGUSR1 raise the flag (and are passed on to the processes
    `forward_to` names, this command's workers). The old handlers come back after. Only the main thread may
    set handlers; elsewhere (a caller's thread) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_flag(signum, _frame) -> None:
        _requested.set()
        for pid in forward_to():
            with contextlib.suppress(ProcessLookupError):  # that worker has ended already
                os.kill(pid, signum)

    before = {sig: signal.signal(sig, raise_flag) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
