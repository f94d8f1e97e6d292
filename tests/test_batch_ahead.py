"""The batch-ahead order `fit` uses on CUDA, run on the CPU on 2 gloo ranks (harness.running.train._ahead).

On CUDA `fit` copies each batch to the device one batch ahead of the step (`_one_ahead`): the next batch is
drawn from `DataParallel.batches` before the step on the current one runs. Each step's row counts (what
`gather` cuts the global batch by) must still be that step's: a last global batch smaller than the others
(320 rows in batches of 96: 48, 48, 48 and 16 rows a rank; 301 rows: 7 and 6 in the last step) used to run
the step before it with its counts, and every such CUDA run failed in `gather`. Here the CUDA branch's order
runs with the device copy stubbed by the CPU's plain copy, and must train exactly as the plain order does:
the same operations on the same rows in the same order, so the losses are equal to the last bit.
"""

from __future__ import annotations


import torch
import torch.multiprocessing as mp

from harness.api.task import TaskData
from harness.running import distributed, train
from harness.running.environment import seed_everything
from tests.ranks import join_cpu_group
from tests.fixtures import TinySynthetic
from tests.test_distributed import WORLD, build, free_port

ROWS = (320, 301)  # the training rows of each case; global batch BATCH: a short last batch, even then uneven
BATCH = 96


def ahead_on_the_cpu(batches, device, names):
    """_ahead's CUDA branch with its stream copy and hand-over stubbed: the copy is the CPU's, the order kept."""
    return train._one_ahead(batches, lambda b: (train._to(b[0], device, names), b[1].to(device), b[2]),
                            lambda b: b)


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    join_cpu_group(rank, world, port)
    task = TinySynthetic()
    data = task.load()
    config = train.TrainConfig(epochs=2, batch_size=BATCH, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                               progress=False)
    plain, found = train._ahead, {}
    for rows in ROWS:
        subset = TaskData(data.train.take(torch.arange(rows)), data.val, data.test)
        for order, ahead in (("plain", plain), ("ahead", ahead_on_the_cpu)):
            train._ahead = ahead
            seed_everything(0)
            try:
                stats = train.fit(build("simclr", task), subset, config, torch.Generator().manual_seed(0))
                found[rows, order] = [epoch["train_loss"] for epoch in stats.history]
            except distributed.RanksFailed as exc:
                found[rows, order] = str(exc)
    if rank == 0:
        torch.save(found, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_the_cuda_batch_ahead_order_trains_uneven_last_batches_as_the_plain_order(tmp_path):
    out = tmp_path / "found.pt"
    mp.spawn(_rank_main, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    found = torch.load(out)
    for rows in ROWS:
        assert isinstance(found[rows, "plain"], list), found[rows, "plain"]
        assert found[rows, "ahead"] == found[rows, "plain"], (rows, found[rows, "ahead"])


def test_one_ahead_draws_the_next_batch_before_handing_over_the_current_one():
    """The stub keeps the order the CUDA branch has: batch k+1's copy starts before batch k reaches the step."""
    events = []

    def batches():
        for k in range(3):
            events.append(f"drawn {k}")
            yield k

    for k in train._one_ahead(batches(), lambda b: b, lambda b: b):
        events.append(f"step {k}")
    assert events == ["drawn 0", "drawn 1", "step 0", "drawn 2", "step 1", "step 2"]
