"""Torch's CPU threads follow the cores that other processes leave free, while a run goes on.

Between two parallel regions libgomp's idle threads spin (300,000 iterations by default) before they
sleep. Spinning makes short regions cheap while every thread has a core of its own, and steals the time
slices of any other process when it has not: two runs started together on 2 cores took 588 s against
63 s with passive waiting (issue 22). A spin count is fixed when OpenMP starts and a look at the machine
at start cannot see work that arrives later, so instead the process looks again about once a second
while it trains: from /proc/stat (all cores) less its own CPU time (/proc/self/stat) it knows how many
cores others keep busy, and it runs as many threads as the rest allows, at least one. With one thread
torch runs no parallel region at all, so nothing spins; when the others finish, the threads come back.
The count a look chose holds for the process (probes and later fits too) until the next look.
"""

from __future__ import annotations

import os
import time

import torch

# A user who set either of these chose how threads wait; the harness then leaves the threads alone.
USER_CHOICES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
INTERVAL_S = 1.0  # how often the machine is looked at; a look costs about 50 microseconds
# Others' busy cores are rounded down unless they use at least this much of a core: a shell or a
# monitor's occasional tick must not halve a free machine's threads.
OTHERS_SLACK = 0.3


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


def threads_left(cores: int, others: float, ceiling: int) -> int:
    """Threads for this process when others keep `others` of the `cores` busy: at least 1, at most `ceiling`."""
    return max(1, min(ceiling, int(cores - others + OTHERS_SLACK)))


class CoreShare:
    """The process's one watcher; `update()` is cheap enough to call every training step."""

    def __init__(self, interval: float = INTERVAL_S):
        self.ceiling = torch.get_num_threads()  # what the process was given (a worker's share, a user's count)
        self.interval = interval
        self.cores = os.cpu_count() or 1
        try:
            self._last = (time.monotonic(), *_cpu_ticks(), _own_ticks())
            self.enabled = self.ceiling > 1 and not any(choice in os.environ for choice in USER_CHOICES)
        except (OSError, ValueError, IndexError):  # no /proc (not Linux): threads stay as they are
            self.enabled = False

    def update(self) -> int:
        """Look at the machine if a look is due, and set torch's threads from it; the count now."""
        if not self.enabled or time.monotonic() - self._last[0] < self.interval:
            return torch.get_num_threads()
        now, busy, total, own = time.monotonic(), *_cpu_ticks(), _own_ticks()
        _, busy0, total0, own0 = self._last
        self._last = (now, busy, total, own)
        if total <= total0:
            return torch.get_num_threads()
        others = max(0.0, (busy - busy0) - (own - own0)) / (total - total0) * self.cores
        threads = threads_left(self.cores, others, self.ceiling)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads


_watcher: CoreShare | None = None


def share_cores(device: torch.device) -> None:
    """Called each CPU training step: the process's threads follow the cores others leave free."""
    global _watcher
    if device.type != "cpu":
        return
    if _watcher is None:
        _watcher = CoreShare()
    _watcher.update()
