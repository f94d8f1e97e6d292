"""A sweep with `--workers 2` against the same sweep in one process, side by side on this machine.

Two workers each get half the cores (harness.running.environment.divide_threads); the sweep must not get
slower from their contention. Both commands run as real subprocesses in fresh folders, one after the
other, with no OMP_NUM_THREADS of ours, so the single process uses every core as a user's would.

Run with `python -m pytest benchmarks/test_sweep_speed.py --benchmark-only -s`; the load average is
kept beside the timings in the benchmark's extra_info.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--method", "clip,untrained", "--task", "synthetic", "--trials", "4", "--seeds", "2", "--epochs", "1",
         "--no-progress"]


def timed_sweep(folder: Path, *extra: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", *SWEEP, "--results", str(folder / "results"),
                           "--workdir", str(folder / "work"), *extra], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((folder / "results" / "records").glob("*/*/seed*.json"))) == 4
    return elapsed


def test_two_workers_are_no_slower_than_one_process(benchmark, tmp_path):
    timings = {}

    def both():
        load_before = os.getloadavg()[0]
        timings["one process"] = timed_sweep(tmp_path / "one")
        timings["--workers 2"] = timed_sweep(tmp_path / "two", "--workers", "2")
        timings["load average (1 min) before, after"] = (load_before, os.getloadavg()[0])

    benchmark.pedantic(both, rounds=1, iterations=1)
    benchmark.extra_info.update(timings)
    print(f"\nsweep wall time: {timings}")
    assert timings["--workers 2"] <= timings["one process"] * 1.05, timings
