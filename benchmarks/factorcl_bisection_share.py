"""What FactorCL-SSL's kernel-bandwidth bisection costs: one call on a 256 x 256 condition, and a whole epoch
of `synthetic` with the bisection and with it replaced by a constant, interleaved in one process.

    python benchmarks/factorcl_bisection_share.py [--rounds 2]

The constant is not a valid bandwidth (the epoch trains another model); it only removes the bisection's work
so that the two epochs differ in nothing else. FactorCL-SSL calls the bisection twice per batch (the shared
and the unique condition) in the main step and in each of its `club_steps` critic steps, each of which
draws its own augmented views, so a per-batch cache would change what the critics see.
"""

from __future__ import annotations

import argparse
import time

import torch

from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything
from harness.running.train import TrainConfig, fit
from methods.common import mi

BATCH = 256


def bisection_ms(calls: int = 20) -> float:
    conditions = torch.randn(BATCH, 256, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for _ in range(calls):
        mi.neighbour_bandwidth(conditions, 16)
    return (time.perf_counter() - started) / calls * 1e3


def epoch_s(task, data, bisect: bool) -> float:
    real = mi.neighbour_bandwidth
    if not bisect:
        mi.neighbour_bandwidth = lambda conditions, min_neighbours: torch.tensor(1.0)
    try:
        seed_everything(0)
        cls = METHODS.get("factorcl-ssl")
        method = cls(task, cls.defaults | {"embed_dim": 256, "factor_dim": 128})
        config = TrainConfig(epochs=1, batch_size=BATCH, lr=1.4e-4, weight_decay=1e-5, device=torch.device("cpu"),
                             progress=False)
        started = time.perf_counter()
        fit(method, data, config, torch.Generator().manual_seed(0))
        return time.perf_counter() - started
    finally:
        mi.neighbour_bandwidth = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"one bisection, {BATCH} x 256 condition: {bisection_ms():.2f} ms ({torch.get_num_threads()} threads)")
    task = TASKS.get("synthetic")()
    data = task.load()
    for _ in range(args.rounds):
        with_it, without = epoch_s(task, data, True), epoch_s(task, data, False)
        print(f"epoch with the bisection {with_it:.1f} s, without {without:.1f} s, ratio {with_it / without:.2f}")


if __name__ == "__main__":
    main()
