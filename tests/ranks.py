"""A spawned test rank joining a gloo group on this machine, as torchrun would set it up."""

import os

import torch

from harness.running import distributed


def join_cpu_group(rank: int, world: int, port: int) -> None:
    """torchrun's variables for `rank` of `world` on 127.0.0.1:`port`, one thread (the ranks share the
    cores), and the harness's process groups started on the CPU."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.start(torch.device("cpu"))
