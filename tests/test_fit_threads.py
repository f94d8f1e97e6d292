"""A fit's torch threads are fixed as it starts (harness.running.threads): an explicit count as given, else the
cores others leave free and a fair share among the harness fits on this machine, and given back at its end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.running import threads
from harness.running.threads import Ledger, default_threads, threads_left

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fresh process state and an empty ledger of this test's own; no wait policy set; no settling."""
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    for choice in threads.USER_CHOICES:
        monkeypatch.delenv(choice, raising=False)
    monkeypatch.setattr(threads, "_machine", None)
    monkeypatch.setattr(threads, "SETTLE_S", 0.0)
    before = torch.get_num_threads()
    yield threads.ledger()
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, others, ceiling, expected", [
    (2, 0.0, 2, 2), (2, 0.2, 2, 2),  # a free machine, or a shell's tick: every thread stays
    (2, 1.0, 2, 1), (2, 0.8, 2, 1), (2, 2.0, 2, 1),  # a core held: one thread, never none
    (16, 3.0, 16, 13), (16, 3.0, 4, 4),  # never above what the process was given
])
def test_threads_left_are_the_cores_others_leave(cores, others, ceiling, expected):
    assert threads_left(cores, others, ceiling) == expected


@pytest.mark.parametrize("ceiling, cpus, fits, cores, others, expected", [
    (2, 2, 1, 2, 0.0, 2),  # alone on a free machine: every core
    (2, 2, 2, 2, 0.0, 1),  # two runs started together: neither sees the other busy yet, the ledger halves
    (2, 2, 1, 2, 1.0, 1),  # alone, but something else holds a core
    (2, 2, 5, 2, 2.0, 1),  # never none
    (16, 16, 3, 16, 3.0, 5),  # a fair share: 16 // 3, though 13 cores are free
    (4, 16, 1, 16, 0.0, 4),  # never above what the process was given (a worker's share)
    (2, 2, 1, 2, None, 2),  # others' load unknown (no /proc): the ledger alone decides
])
def test_the_default_is_the_fair_share_of_what_others_leave(ceiling, cpus, fits, cores, others, expected):
    assert default_threads(ceiling, cpus, fits, cores, others) == expected


def test_the_default_reads_the_ledger_and_the_machine(machine, monkeypatch):
    # Synthetic /proc counters on 2 cores: per look 200 ticks pass on all cores, this process uses `own`.
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    ticks = {"busy": 0, "total": 0, "own": 0}
    monkeypatch.setattr(threads, "_cpu_ticks", lambda: (ticks["busy"], ticks["total"]))
    monkeypatch.setattr(threads, "_own_ticks", lambda: ticks["own"])

    def look(own: int, others: int) -> int:
        ticks["total"] += 200
        ticks["busy"] += own + others
        ticks["own"] += own
        return threads.chosen_default(2)

    assert look(own=200, others=0) == 2  # alone, nothing else busy
    assert look(own=100, others=100) == 1  # another process kept a core busy since the last look
    assert look(own=200, others=0) == 2  # it finished
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        machine.enter(other.pid)  # another harness fit, not busy yet (it is loading its data)
        assert look(own=200, others=0) == 1
    finally:
        other.kill()
        other.wait()
    assert look(own=200, others=0) == 2 and not (machine.folder / str(other.pid)).exists()  # dead: removed


def test_a_users_wait_setting_keeps_the_count_given(machine, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(threads, "_cpu_ticks", lambda: pytest.fail("the machine was looked at"))
    assert threads.chosen_default(2) == 2


def test_the_ledger_counts_live_processes_once(machine):
    machine.enter()
    machine.enter()  # entering again changes nothing
    (machine.folder / "999999999").write_text('{"pid": 999999999, "started": "1"}')  # no such process
    (machine.folder / "12").write_text("{half writ")  # a process killed while writing
    # This PID now names a process started at another time than the one that wrote the file: reused.
    (machine.folder / str(os.getppid())).write_text(f'{{"pid": {os.getppid()}, "started": "-1"}}')
    assert machine.count() == 1
    assert sorted(p.name for p in machine.folder.iterdir()) == [".lock", str(os.getpid())]
    machine.leave()
    assert machine.count() == 0


def test_a_fit_holds_its_count_and_gives_its_share_back_at_its_end(machine, monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    monkeypatch.setattr(threads._Machine, "others_busy", lambda self: 0.0)
    torch.set_num_threads(2)
    with threads.fit_threads(None, on_cpu=True) as count:
        assert count == torch.get_num_threads() == 2 and machine.count() == 1
        # Another run entering meanwhile changes nothing in this fit: its count was chosen as it started.
        machine.enter(os.getppid())
        assert torch.get_num_threads() == 2
    assert machine.count() == 1  # only the other one: this process gave its share back
    with threads.fit_threads(None, on_cpu=True) as count:
        assert count == 1  # the next fit starts beside the other run: half the cores
    with threads.fit_threads(3, on_cpu=True) as count:
        assert count == torch.get_num_threads() == 3  # an explicit count, whatever the ledger says
    assert torch.get_num_threads() == 2


CHILD = """
import sys
from harness.running import threads
threads.available_cpus = lambda: 2  # a 2-core machine, whatever this one is
threads._Machine.others_busy = lambda self: 0.0  # nothing else busy: only the ledger can lower the count
print("ready", flush=True)
sys.stdin.readline()
print(threads.chosen_default(2), flush=True)
sys.stdin.readline()
"""


def test_two_runs_started_together_count_each_other(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in threads.USER_CHOICES}
    env |= {"PYTHONPATH": str(ROOT), "HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    children = [subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        assert [child.stdout.readline().strip() for child in children] == ["ready", "ready"]  # torch imported
        for child in children:  # both start their first fit now, neither having entered the ledger
            child.stdin.write("\n")
            child.stdin.flush()
        assert [child.stdout.readline().strip() for child in children] == ["1", "1"]
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_a_busy_core_lowers_the_default(machine):
    cores = os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one core: there is nothing to lower")
    threads.announce()  # starts the window with nothing of ours running
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        # The spinner holds one core for the whole window, whatever else runs: at most cores - 1 threads.
        assert threads.chosen_default(cores) <= cores - 1
    finally:
        spinner.kill()
        spinner.wait()
