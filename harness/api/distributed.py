"""Gathering a batch's rows from every rank of a data-parallel run, with gradients.

A contrastive loss must see the global batch: its negatives are every other sample the
step trains on, not only the ones this rank holds. A method therefore passes each tensor
that enters its loss through `gather`: in one process it is the tensor itself (no copy, no
cost); while the harness trains data-parallel (harness.running.distributed) it is every
rank's rows, in rank order, which is the global batch's row order. So every rank computes
the same loss as one process on the whole global batch would.

Gradients: every rank then holds the whole loss L. The backward of `gather` sums the
gradient that each rank's copy of L sends to a rank's rows (all-reduce), which is W times
dL/dz for a rank's own rows z; DistributedDataParallel then averages the parameters'
gradients over the W ranks, dividing the W back out. Parameters the loss reads directly
(CLIP's logit scale, a critic's weights) get dL/dtheta on every rank and the same average.
So 2 ranks x 64 rows step exactly as 1 process x 128 rows (tests/test_distributed.py), at
the price of every rank computing the loss head on the global batch, which is cheap next
to the encoders that do split (see docs/distributed.md).

Imports torch.distributed lazily: methods import this module, and one process never needs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class _Parallel:
    group: Any  # the process group the ranks train in
    rank: int
    world_size: int
    rows: list[int] | None = None  # rows each rank holds in the current step, when the harness knows them


_ACTIVE: _Parallel | None = None  # set only while a fit trains data-parallel


@contextlib.contextmanager
def across(group: Any, rank: int, world_size: int) -> Iterator[_Parallel]:
    """Make `gather` gather across the ranks of `group` while the block runs (the harness's training loop).
    Nested uses (a guide trained inside `prepare`) restore the outer state when they end."""
    global _ACTIVE
    outer = _ACTIVE
    _ACTIVE = _Parallel(group, rank, world_size)
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = outer


def world_size() -> int:
    """How many ranks train the current step together (1 in one process)."""
    return _ACTIVE.world_size if _ACTIVE is not None else 1


def rank() -> int:
    return _ACTIVE.rank if _ACTIVE is not None else 0


def set_step_rows(rows: list[int] | None) -> None:
    """How many rows each rank holds in this step. The harness knows it on every rank without asking
    (every rank draws the same epoch order), so `gather` need not exchange sizes: no extra collective
    and no wait for the device to say how many rows it holds."""
    if _ACTIVE is not None:
        _ACTIVE.rows = rows


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `x`, concatenated in rank order; gradients flow back to each rank's own rows.

    The identity in one process. Labels and other tensors without gradients gather the same way."""
    if _ACTIVE is None or _ACTIVE.world_size == 1:
        return x
    rows = _ACTIVE.rows if _ACTIVE.rows is not None else _exchange_sizes(x, _ACTIVE.group)
    if rows[_ACTIVE.rank] != len(x):
        raise RuntimeError(f"gather: this rank holds {len(x)} rows, but the step gives it {rows[_ACTIVE.rank]}")
    return _GatherRows.apply(x, _ACTIVE.group, _ACTIVE.rank, tuple(rows))


def _exchange_sizes(x: torch.Tensor, group: Any) -> list[int]:
    import torch.distributed as dist

    sizes = [torch.zeros((), dtype=torch.long, device=x.device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(sizes, torch.tensor(len(x), device=x.device), group=group)
    return [int(s) for s in sizes]


class _GatherRows(torch.autograd.Function):
    """Forward: all-gather (padded to the longest rank's rows, since all-gather moves equal shapes).
    Backward: all-reduce (sum) of the gradient of the gathered rows, then this rank's own slice.

    All-reduce rather than reduce-scatter: gloo, the CPU backend, has no reduce-scatter, and these
    are embeddings (rows x a few hundred floats), so the traffic is small either way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any, rank: int, rows: tuple[int, ...]) -> torch.Tensor:
        import torch.distributed as dist

        longest = max(rows)
        padded = x if len(x) == longest else torch.cat([x, x.new_zeros((longest - len(x), *x.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in rows]
        dist.all_gather(parts, padded.contiguous(), group=group)
        ctx.group, ctx.start, ctx.stop = group, sum(rows[:rank]), sum(rows[: rank + 1])
        return torch.cat([part[:n] for part, n in zip(parts, rows)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        import torch.distributed as dist

        grad = grad.contiguous().clone()  # all_reduce works in place; autograd's buffer is not ours to change
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.start : ctx.stop], None, None, None
