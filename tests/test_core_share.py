"""Torch's threads follow the cores other processes leave free (harness.running.core_share)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from harness.running import core_share
from harness.running.core_share import CoreShare, threads_left


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, others, ceiling, expected", [
    (2, 0.0, 2, 2), (2, 0.2, 2, 2),  # a free machine, or a shell's tick: every thread stays
    (2, 1.0, 2, 1), (2, 0.8, 2, 1), (2, 2.0, 2, 1),  # a core held: one thread, never none
    (16, 3.0, 16, 13), (16, 3.0, 4, 4),  # never above what the process was given
])
def test_threads_left_are_the_cores_others_leave(cores, others, ceiling, expected):
    assert threads_left(cores, others, ceiling) == expected


def test_threads_drop_while_another_process_holds_a_core_and_come_back_after(monkeypatch, threads):
    # Synthetic /proc counters on 2 cores, so the arithmetic is checked whatever else this machine runs:
    # per look 200 ticks pass on all cores; this process uses `own` of them, others `busy - own`.
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    ticks = {"busy": 0, "total": 0, "own": 0}
    monkeypatch.setattr(core_share, "_cpu_ticks", lambda: (ticks["busy"], ticks["total"]))
    monkeypatch.setattr(core_share, "_own_ticks", lambda: ticks["own"])
    torch.set_num_threads(2)
    watcher = CoreShare(interval=0.0)

    def advance(own: int, others: int) -> int:
        ticks["total"] += 200
        ticks["busy"] += own + others
        ticks["own"] += own
        return watcher.update()

    assert advance(own=200, others=0) == 2  # alone: both threads
    assert advance(own=100, others=100) == 1 and torch.get_num_threads() == 1  # another run took a core
    assert advance(own=100, others=100) == 1
    assert advance(own=100, others=0) == 2 and torch.get_num_threads() == 2  # it finished


def test_a_real_spinning_process_lowers_the_threads(monkeypatch, threads):
    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: there is nothing to lower")
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    torch.set_num_threads(cores)
    watcher = CoreShare(interval=0.0)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        watcher.update()  # starts the window with the spinner running
        time.sleep(0.5)
        # The spinner holds one core for the whole window, whatever else runs: at most cores - 1 threads.
        assert watcher.update() <= cores - 1
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.parametrize("variable, value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "300000")])
def test_a_users_wait_setting_leaves_the_threads_alone(monkeypatch, threads, variable, value):
    monkeypatch.setenv(variable, value)
    torch.set_num_threads(2)
    assert not CoreShare(interval=0.0).enabled
