"""Ratios measured side by side: the alternatives take turns, round after round, in one process, so a
change in the machine's load touches both. A ratio is the only speed figure a shared machine supports."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each contender over `rounds` turns taken in alternation."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(spent) for name, spent in times.items()}


def record(benchmark, medians: dict[str, float], baseline: str) -> None:
    """Each median, and each contender's speed-up over the baseline, into the benchmark's extra_info."""
    for name, seconds in medians.items():
        benchmark.extra_info[f"{name}_s"] = round(seconds, 4)
        if name != baseline:
            benchmark.extra_info[f"speedup_{name}_vs_{baseline}"] = round(medians[baseline] / seconds, 2)
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["load_average_1min"] = os.getloadavg()[0]
