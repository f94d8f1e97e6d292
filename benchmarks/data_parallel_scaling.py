"""One SimCLR epoch on `synthetic` (24,000 rows, global batch 256): one process against 2 data-parallel ranks.

    OMP_NUM_THREADS=1 python -m benchmarks.data_parallel_scaling [rounds]

Contenders, in turns, round after round (on a shared machine only ratios mean anything):
1 process x 1 thread, 1 process x 2 threads, 2 ranks (gloo, spawned) x 1 thread each. Each trains
2 epochs through harness.running.train.fit; the second epoch's wall time is the figure (the first
pays for DDP's set-up and the first steps' allocations). Prints one line per contender with the
median and the 1-minute load average beside it.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

EPOCHS, BATCH = 2, 256


def epoch_seconds() -> float:
    from harness.api.catalog import METHODS
    from harness.running.environment import seed_everything
    from harness.running.train import TrainConfig, fit
    from tasks.synthetic import Synthetic

    task = Synthetic()
    data = task.load()
    cls = METHODS.get("simclr")
    seed_everything(0)
    marks = [time.perf_counter()]
    config = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=1e-3, weight_decay=1e-5, device=torch.device("cpu"),
                         progress=False)
    fit(cls(task, dict(cls.defaults)), data, config, torch.Generator().manual_seed(0),
        lambda method, epoch, metrics: marks.append(time.perf_counter()))
    return marks[-1] - marks[-2] if len(marks) > 2 else float("nan")  # a follower's callback never runs


def _rank(rank: int, world: int, port: int, out: str) -> None:
    from harness.running import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.start(torch.device("cpu"))
    seconds = epoch_seconds()
    if rank == 0:
        with open(out, "w") as file:
            file.write(str(seconds))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def two_ranks() -> float:
    from tests.test_distributed import free_port

    out = tempfile.mktemp(suffix=".txt")
    mp.spawn(_rank, args=(2, free_port(), out), nprocs=2, join=True)
    with open(out) as file:
        return float(file.read())


def one_process(threads: int) -> float:
    torch.set_num_threads(threads)
    return epoch_seconds()


def main(rounds: int) -> None:
    contenders = {"1 process x 1 thread": lambda: one_process(1), "1 process x 2 threads": lambda: one_process(2),
                  "2 ranks x 1 thread": two_ranks}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    loads = []
    for _ in range(rounds):
        for name, run in contenders.items():
            loads.append(os.getloadavg()[0])
            times[name].append(run())
    base = statistics.median(times["1 process x 1 thread"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:24s} epoch {median:6.2f} s (runs: {', '.join(f'{v:.2f}' for v in values)}); "
              f"speed-up {base / median:.2f}x over 1 process x 1 thread")
    print(f"1-minute load average during the runs: {min(loads):.2f} to {max(loads):.2f}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
