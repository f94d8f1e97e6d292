"""`harness run` as one rank of a data-parallel command (torchrun started it; harness.running.distributed).

Rank 0 runs the command as one process does, and at its end (or failure) releases the other ranks;
they train what rank 0 sends them and open no store of their own.
"""

from __future__ import annotations

import torch

from harness.cli.commands import plan, run_command
from harness.cli.requests import RunRequest
from harness.running import distributed
from harness.running.environment import resolve_device
from harness.running.train import fit


def run_as_rank(run: RunRequest) -> int:
    ranks = distributed.start(resolve_device(run.device))
    try:
        if ranks.rank == 0:
            return run_command(run)
        distributed.follower_logging()
        pairs, _skipped = plan(list(run.methods), list(run.tasks), run.data_dir)
        if run.threads:  # each rank trains its share of every batch at the count rank 0 fits at
            torch.set_num_threads(run.threads)
        return distributed.follow(pairs, fit)
    finally:
        distributed.stop()
