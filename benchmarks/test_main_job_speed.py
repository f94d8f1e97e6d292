"""The README's main job, today's code against the code the speed issue measured, side by side.

`harness run --method clip --task synthetic` with the defaults (6 trials, 3 seeds, 6 epochs), each
run in fresh scratch folders so that it trains, run from a checkout of BEFORE (benchmarks/conftest.py:
main when issue 16 was filed) and from this checkout, in alternation, as separate processes with the
threads torch picks by itself and the user's own OpenMP settings (`conftest.user_environment`), in which
each checkout's `harness` chooses its OpenMP wait policy (BEFORE's always passive, this one's passive
only when other processes keep the cores busy): what a user gets. Besides the speed-up, the three
seeds' mean test accuracy of each, so "the same results within noise" can be read off.
Run with `python -m pytest benchmarks/test_main_job_speed.py --benchmark-only` (about 5 minutes on
a 2-core CPU; one round).
"""

import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.conftest import user_environment
from benchmarks.sidebyside import interleaved, record

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 1


def main_job(checkout: Path, scratch: Path, extra: list[str], accuracies: list[float]):
    def run():
        folder = scratch / f"round{len(accuracies)}"
        command = [sys.executable, "-m", "harness.cli", "run", "--method", "clip", "--task", "synthetic",
                   "--results", str(folder / "results"), "--workdir", str(folder / "work"), "--no-progress", *extra]
        subprocess.run(command, cwd=checkout, env=user_environment(), check=True, capture_output=True)
        seeds = [json.loads(p.read_text())["metrics"]["test_acc"]
                 for p in sorted((folder / "results" / "records" / "synthetic" / "clip").glob("seed*.json"))]
        assert len(seeds) == 3
        accuracies.append(statistics.mean(seeds))
    return run


def test_the_readme_main_job_now_vs_before(benchmark, before_checkout, tmp_path):
    before_acc, now_acc = [], []
    medians = interleaved({
        "before": main_job(before_checkout, tmp_path / "before", [], before_acc),
        "now": main_job(ROOT, tmp_path / "now", ["--allow-dirty"], now_acc),
    }, ROUNDS)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timings are the side-by-side medians above
    record(benchmark, medians, baseline="before")
    benchmark.extra_info["test_acc_mean_before"] = round(statistics.mean(before_acc), 4)
    benchmark.extra_info["test_acc_mean_now"] = round(statistics.mean(now_acc), 4)
    assert medians["before"] / medians["now"] >= 3  # the target: at most a third of the wall time
