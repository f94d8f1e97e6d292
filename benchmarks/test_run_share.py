"""Where the README's main job spends its time: `harness run --method clip --task synthetic` with the
defaults (6 trials, 3 seeds, the task's 6 epochs), in scratch folders, with the probe and the feature
extraction timed from inside. The probe's share of the wall time is the figure the speed issue targets
(at most 5%). One round of about a minute on a 2-core CPU.
Run with `python -m pytest benchmarks/test_run_share.py --benchmark-only`.
"""

import time

from harness import probe, runner
from harness.cli import main


def timed(spent: dict, key: str, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - started
    return wrapper


def test_share_of_the_main_job_spent_in_the_probe(benchmark, tmp_path, monkeypatch):
    spent: dict[str, float] = {}
    monkeypatch.setattr(probe, "linear_probe", timed(spent, "full_probe", probe.linear_probe))
    monkeypatch.setattr(probe, "quick_probe_accuracy", timed(spent, "quick_probe", probe.quick_probe_accuracy))
    monkeypatch.setattr(runner, "extract_features", timed(spent, "feature_extraction", runner.extract_features))
    monkeypatch.setattr(runner, "fit", timed(spent, "training", runner.fit))

    def main_job():
        code = main(["run", "--method", "clip", "--task", "synthetic", "--results", str(tmp_path / "results"),
                     "--workdir", str(tmp_path / "work"), "--no-progress"])
        assert code == 0

    benchmark.pedantic(main_job, rounds=1, iterations=1)
    wall = benchmark.stats.stats.mean
    benchmark.extra_info["wall_s"] = round(wall, 1)
    for key, seconds in spent.items():
        benchmark.extra_info[f"{key}_s"] = round(seconds, 2)
        benchmark.extra_info[f"{key}_share"] = round(seconds / wall, 3)
    probe_share = (spent.get("full_probe", 0) + spent.get("quick_probe", 0)) / wall
    benchmark.extra_info["probe_share"] = round(probe_share, 3)
    assert probe_share <= 0.05
