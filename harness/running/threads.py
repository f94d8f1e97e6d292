"""How many torch threads a training fit runs with: chosen once, as the fit starts, and recorded.

A fit's numbers follow its thread count: torch splits a large reduction among its threads and adds their
partial sums, so the same fit at 1 and at 2 threads can differ in the last bits, and training carries such
bits on into the model. So the count never changes during a fit (a trial or a seed, with its probes and
audit); the seed's record says what it was (environment["threads"]), a trial's user attributes likewise,
and `harness reproduce` runs with the record's count.

An explicit count wins: `harness run --threads N`, else an OMP_NUM_THREADS you set; either is each worker's
count. Otherwise the count is what the process was given (the cores it may use, divided among --workers),
less the cores other processes keep busy as the fit starts, and at most a fair share of the cores among the
harness fits running on this machine; at least one. Why not every core: between parallel regions libgomp's
idle threads spin, which makes short regions cheap while each thread has a core of its own, and steals the
time slices of everything else when it has not: two runs started together on 2 cores took 588 s against 63 s
waiting passively (issue 22). With one thread torch runs no parallel region, so nothing spins. That default
follows the load, so its numbers do too: pin the count for results independent of load.

"The harness fits on this machine" is a ledger in the machine cache (harness/running/workdir.py): a file per
process, written when a process is about to train on the CPU and removed when each of its fits ends. A file
whose process is gone (or whose PID now names another process) is ignored and removed. A process's first fit
starts no sooner than SETTLE_S after the process entered the ledger, so two runs started together count
each other; a `harness run` enters it when its runner is built, before its data load, so it rarely waits.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from harness.running.coordination.mutex import FileMutex
from harness.running.environment import available_cpus
from harness.running.workdir import cache_dir

# A user who set either of these chose how threads wait; the count then stays what the process was given.
USER_CHOICES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# Others' busy cores are rounded down unless they use at least this much of a core: a shell or a
# monitor's occasional tick must not halve a free machine's threads.
OTHERS_SLACK = 0.3
SETTLE_S = 0.5  # two runs started "together" enter the ledger within this of each other


def _cpu_ticks() -> tuple[int, int]:
    """All cores' (busy, total) clock ticks since boot."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _own_ticks() -> int:
    with open("/proc/self/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot, field 22 of proc(5)); None where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def threads_left(cores: int, others: float, ceiling: int) -> int:
    """Threads for this process when others keep `others` of the `cores` busy: at least 1, at most `ceiling`."""
    return max(1, min(ceiling, int(cores - others + OTHERS_SLACK)))


def default_threads(ceiling: int, cpus: int, fits: int, cores: int, others: float | None) -> int:
    """The count a fit takes when none is given: what the process was given (`ceiling`), at most a fair share
    of the `cpus` it may use among the `fits` on this machine (itself included), at most what others leave of
    the machine's `cores` (None: unknown), at least 1."""
    share = max(1, min(ceiling, cpus // max(1, fits)))
    return share if others is None else min(share, threads_left(cores, others, ceiling))


class Ledger:
    """The harness fits on this machine: a file per process, NAME = PID, holding its start time."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._mutex = FileMutex(self.folder / ".lock")  # the machine-wide flock the sweep's workers use too

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return self._mutex.hold()

    def enter(self, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        with self._locked():
            (self.folder / str(pid)).write_text(json.dumps({"pid": pid, "started": _start_time(pid)}))

    def leave(self, pid: int | None = None) -> None:
        with self._locked():
            (self.folder / str(os.getpid() if pid is None else pid)).unlink(missing_ok=True)

    def count(self) -> int:
        """Live processes in the ledger; the files of those that are gone are removed."""
        live = 0
        with self._locked():
            for entry in self.folder.iterdir():
                if entry.name.startswith("."):
                    continue
                try:
                    held = json.loads(entry.read_text())
                    pid = int(held["pid"])
                except (OSError, ValueError, KeyError, TypeError):
                    entry.unlink(missing_ok=True)  # half written by a process killed meanwhile, or not ours
                    continue
                started = _start_time(pid)
                if _alive(pid) and (held.get("started") is None or started is None or started == held["started"]):
                    live += 1
                else:
                    entry.unlink(missing_ok=True)
        return live


def ledger() -> Ledger:
    return Ledger(cache_dir() / "cpu-fits")


class _Machine:
    """This process's place in the ledger, and the machine's CPU counters at its last look."""

    def __init__(self):
        self.entered = time.monotonic()
        try:
            self.last: tuple[int, int, int] | None = (*_cpu_ticks(), _own_ticks())
        except (OSError, ValueError, IndexError):  # no /proc (not Linux): others' load is unknown
            self.last = None

    def others_busy(self) -> float | None:
        """Cores that other processes kept busy since the last look (None: unknown); starts the next window."""
        if self.last is None:
            return None
        busy, total, own = *_cpu_ticks(), _own_ticks()
        busy0, total0, own0 = self.last
        self.last = (busy, total, own)
        if total <= total0:
            return None
        return max(0.0, (busy - busy0) - (own - own0)) / (total - total0) * (os.cpu_count() or 1)


_machine: _Machine | None = None


def announce() -> None:
    """This process is about to train on the CPU: enter the ledger, and start watching the machine."""
    global _machine
    ledger().enter()
    if _machine is None:
        _machine = _Machine()
        atexit.register(ledger().leave)  # one that ends mid-fit (an error, Ctrl+C) leaves no entry behind


def chosen_default(ceiling: int) -> int:
    """The count for a fit starting now without an explicit one (see the module's docstring)."""
    if ceiling <= 1 or any(choice in os.environ for choice in USER_CHOICES):
        return max(1, ceiling)
    announce()
    time.sleep(max(0.0, SETTLE_S - (time.monotonic() - _machine.entered)))
    return default_threads(ceiling, available_cpus(), ledger().count(), os.cpu_count() or 1, _machine.others_busy())


@contextlib.contextmanager
def fit_threads(explicit: int | None, on_cpu: bool) -> Iterator[int]:
    """Run one fit at a count fixed now: `explicit` if given, else on the CPU the default above, else the
    process's count. Yields the count; afterwards the process's count is restored and, on the CPU, its
    ledger entry removed, so the fits that start next count this process no longer."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if on_cpu:
        announce()  # an explicit count's fit is counted by the others too
    threads = explicit or (chosen_default(before) if on_cpu else before)
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield threads
    finally:
        torch.set_num_threads(before)
        if on_cpu:
            ledger().leave()
