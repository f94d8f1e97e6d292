"""One training run across several processes (ranks), data-parallel, as torchrun starts them.

`torchrun --nproc-per-node N -m harness run ...` (or `harness run --nproc N`, harness/cli/launch.py)
starts N copies of the command; torchrun gives each its RANK, LOCAL_RANK and WORLD_SIZE. Here:

* Who does what. Rank 0 runs the command as one process would: Optuna, MLflow, the records, the
  probe. The other ranks (followers) open none of them. Each time rank 0 trains (a trial or a seed)
  it first sends the job (pair, hyperparameters, seed, training configuration) to the followers
  (`lead`); every rank then enters the same `fit`. A "done" message ends the followers (`release`).
  Control messages travel in a gloo group of their own with a long timeout: followers wait there
  while rank 0 tunes, probes and records, which may take longer than a collective is allowed to.
  Before the first step of each fit every rank compares its training data's fingerprint and its code
  commit with rank 0's (`DataParallel._check_followers`): a node with another copy of the data stops
  the run, on every rank together, instead of training unseen under rank 0's fingerprint.
* Agreement. Every decision that ends a fit early is taken once and shared, so no rank is left
  waiting in a collective the others have left: a loss that turned non-finite on any rank stops all
  of them (`DataParallel.agree`), a stop signal (SIGTERM, SIGUSR1) that reached any rank stops all
  of them after the same step (`DataParallel.stop_agreed`: one all-reduce of a flag per step), and
  rank 0's epoch callback (validation probe, pruning) decides for everyone whether training goes on
  (`DataParallel.after_epoch`).
* Failure. A rank that fails or dies takes the run with it: the survivors' next collective fails,
  which ends them with one line (`RanksFailed`), and torchrun stops whoever is left. Records are written
  only after a seed is scored, atomically, so no partial record is left; rerunning continues.
* The step (`DataParallel`): every rank draws the same epoch order and takes its own slice of each
  global batch (`batch_size` is the global batch; each rank holds batch_size / N rows), so the ranks'
  shards are disjoint and together cover the epoch. The method runs under DistributedDataParallel,
  its auxiliary objectives (FactorCL's critics) under one DDP wrapper each; losses gather the global
  batch through harness.api.distributed. Batch norm: SyncBatchNorm on GPUs (statistics over the
  global batch, as SimCLR trains); on the CPU torch has no SyncBatchNorm, so each rank normalizes by
  its own rows and DDP hands rank 0's running statistics to all ranks at every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from harness.api import distributed as gathering
from harness.api.errors import DivergedError, HarnessError
from harness.api.method import Auxiliary, Method
from harness.api.task import Split
from harness.running import environment
from harness.running.failures import out_of_memory, out_of_memory_line
from harness.running.preemption import Preempted

log = logging.getLogger(__name__)

# How long a collective waits for a rank that hangs (one that dies is noticed at once: its connections close,
# or torchrun stops the others). Training's group: the longest wait there is rank 0, in the first fit's first
# collective, waiting for a follower to load its data (listing ImageNet's files on a cold network disk takes
# minutes), or a first step that compiles or starts the JPEG decoders; 15 minutes covers those, where gloo's
# default left a hung rank holding every GPU for 30. The control group: followers wait there while rank 0 works
# alone (tunes, probes a whole ImageNet's features, records, or waits for other workers holding the pair's
# remaining seeds), which may take hours.
STEP_TIMEOUT_ENV, STEP_TIMEOUT_MIN = "HARNESS_STEP_TIMEOUT_MIN", 15.0
CONTROL_TIMEOUT_ENV, CONTROL_TIMEOUT_H = "HARNESS_CONTROL_TIMEOUT_H", 24.0
# Each rank's augmentations draw from their own stream; rank 0 keeps the run's. Seeds are below 2**32,
# so no other run's seed lands on a follower's, and the parity some test methods read is kept.
RANK_SEED_STRIDE = 2**32


def world_size_from_environment() -> int:
    """How many ranks torchrun started this command among (1 when it did not start it)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


class RanksFailed(HarnessError):
    """A rank failed or died: the whole run stops, with one line."""


class RanksDisagree(RanksFailed):
    """A follower holds other training data or other code than rank 0: every rank refuses the fit together."""


class Stopped(Exception):
    """A follower's fit ended where rank 0's did (its trial was pruned, or its callback failed)."""


@dataclass
class Ranks:
    rank: int
    world_size: int
    local_rank: int
    control: Any  # gloo group for the leader's messages
    broken: bool = False  # a collective failed: send nothing more


_RANKS: Ranks | None = None


def start(device: torch.device) -> Ranks:
    """Join the process group torchrun set up for this command; one device per rank (LOCAL_RANK) on GPUs."""
    global _RANKS
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)  # before any CUDA work, so "cuda" means this rank's GPU
    backend = "nccl" if device.type == "cuda" else "gloo"
    steps = datetime.timedelta(minutes=_timeout(STEP_TIMEOUT_ENV, STEP_TIMEOUT_MIN, "minutes"))
    waits = datetime.timedelta(hours=_timeout(CONTROL_TIMEOUT_ENV, CONTROL_TIMEOUT_H, "hours"))
    try:
        dist.init_process_group(backend, timeout=steps)
        control = dist.new_group(backend="gloo", timeout=waits)
    except (RuntimeError, ValueError) as exc:
        raise HarnessError(f"cannot join the ranks torchrun started ({_first_line(exc)}); check MASTER_ADDR, "
                           f"--rdzv-endpoint and that every node can reach it") from None
    _RANKS = Ranks(dist.get_rank(), dist.get_world_size(), local_rank, control)
    return _RANKS


def _timeout(name: str, default: float, unit: str) -> float:
    """A timeout from the environment variable `name`, in `unit`; `default` when unset."""
    given = os.environ.get(name, "").strip()
    try:
        value = float(given) if given else default
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise HarnessError(f"{name}={given}: give a positive number of {unit} (default {default:g}), or unset it")
    return value


def stop() -> None:
    """Leave the group: rank 0 first releases the followers, unless a collective already failed."""
    global _RANKS
    if _RANKS is None:
        return
    ranks, _RANKS = _RANKS, None
    if not ranks.broken:
        if ranks.rank == 0:
            _send(ranks, {"job": "done"})
        dist.destroy_process_group()


def current() -> Ranks | None:
    return _RANKS


# -- rank 0 leads, the others follow --------------------------------------------------------------


def lead(pair_key: str, hparams: dict[str, Any], seed: int, config: Any) -> None:
    """Rank 0, about to train: tell the followers what, so every rank enters the same fit. A no-op alone."""
    if _RANKS is not None and _RANKS.rank == 0:
        _send(_RANKS, {"job": "train", "pair": pair_key, "hparams": hparams, "seed": seed, "config": config})


def follow(pairs: list, fit: Callable) -> int:
    """A follower's whole command: train each job rank 0 sends, until it says done. `fit` is
    harness.running.train.fit (passed in: train imports this module)."""
    ranks = _RANKS
    assert ranks is not None and ranks.rank > 0
    by_key = {pair.key: pair for pair in pairs}
    loaded: dict[int, Any] = {}
    while True:
        job = _receive(ranks)
        if job["job"] == "done":
            return 0
        pair = by_key[job["pair"]]
        if id(pair.task) not in loaded:
            loaded[id(pair.task)] = pair.task.load()
        generator = environment.seed_everything(job["seed"])  # as rank 0 seeded it: the same weights, order
        method = pair.method_cls(pair.task, job["hparams"])
        try:
            fit(method, loaded[id(pair.task)], dataclasses.replace(job["config"], progress=False), generator)
        except (Stopped, DivergedError, RanksDisagree, Preempted):
            pass  # decided together: rank 0 records (or says) what it means; wait for the next job or "done"


def _send(ranks: Ranks, message: dict[str, Any]) -> None:
    try:
        dist.broadcast_object_list([message], src=0, group=ranks.control)
    except RuntimeError as exc:
        raise ranks_failed(ranks, exc) from None


def _receive(ranks: Ranks) -> dict[str, Any]:
    box: list[Any] = [None]
    try:
        dist.broadcast_object_list(box, src=0, group=ranks.control)
    except RuntimeError as exc:
        raise ranks_failed(ranks, exc) from None
    return box[0]


def ranks_failed(ranks: Ranks, exc: BaseException) -> RanksFailed:
    """The one line a rank ends with when the group broke (or it ran out of memory, which breaks it)."""
    ranks.broken = True
    what = out_of_memory_line(exc) if out_of_memory(exc) else f"{type(exc).__name__}: {_first_line(exc)}"
    return RanksFailed(f"rank {ranks.rank} of {ranks.world_size} stopped: {what}. A rank that fails or dies "
                       f"ends the whole data-parallel run; no record was written for the run in progress, and "
                       f"the same command continues from the records kept")


def _first_line(exc: BaseException) -> str:
    """The message's first sentence, without the source location gloo puts before it."""
    text = re.sub(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*", "", str(exc).strip())
    text = text.splitlines()[0] if text else type(exc).__name__
    return text.split(". ")[0].rstrip(".")


# -- one fit, one process or data-parallel ----------------------------------------------------------


class Alone:
    """One process: every call goes straight to the method, as before data parallelism existed."""

    rank = 0

    def share(self, state):
        return state

    def stop_agreed(self, requested: bool) -> bool:
        return requested

    def gather(self, value) -> list:
        return [value]

    def prepare(self, method: Method) -> None:
        self.method = method

    def batches(self, split: Split, batch_size: int, generator: torch.Generator):
        return split.batches(batch_size, shuffle=True, generator=generator)

    def loss(self, batch):
        return self.method.loss(batch)

    def auxiliary(self, objective: Auxiliary) -> Auxiliary:
        return objective

    def agree(self, first_bad: dict[str, torch.Tensor]) -> None:
        pass

    def after_epoch(self, on_epoch, method: Method, epoch: int, metrics: dict[str, float]) -> None:
        if on_epoch is not None:
            on_epoch(method, epoch, metrics)


class _Objective(nn.Module):
    """What DDP wraps: a module holding the parameters (and buffers) to keep in step, and the loss to call.
    DDP prepares its gradient reduction in `forward`, so the loss must be called through it."""

    def __init__(self, holder: nn.Module, loss: Callable):
        super().__init__()
        self.holder = holder
        self.objective = loss  # a bound method, not a module: not registered, so its owner is not wrapped twice

    def forward(self, batch):
        return self.objective(batch)


class DataParallel:
    """One fit across the ranks (see the module's docstring)."""

    def __init__(self, ranks: Ranks):
        self.ranks = ranks
        self.agreed = False  # the fit ends by a decision every rank shares: no rank is left behind
        self._auxiliary: dict[int, Auxiliary] = {}
        self._checked = False  # the followers' data and code were compared with rank 0's (once per fit)
        self._step_rows: dict[int, list[int]] = {}  # this epoch's steps: first row -> rows each rank holds

    @property
    def rank(self) -> int:
        return self.ranks.rank

    def share(self, state):
        """Rank 0's value (a preempted seed's state, or None) on every rank."""
        box = [state if self.ranks.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self.ranks.control)
        return box[0]

    def stop_agreed(self, requested: bool) -> bool:
        """Whether any rank was asked to stop (preemption), on every rank: all stop after the same step."""
        flag = torch.tensor(int(requested), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag:
            self.agreed = True
        return bool(flag)

    def gather(self, value) -> list:
        """Every rank's value, in rank order (each rank's random streams, for the checkpoint)."""
        values: list = [None] * self.ranks.world_size
        dist.all_gather_object(values, value, group=self.ranks.control)
        return values

    def prepare(self, method: Method) -> None:
        """After `method.prepare` (a guide built there is broadcast with the rest), before the optimizers."""
        device = self.device = next(method.parameters(), torch.empty(0)).device
        if device.type == "cuda":
            nn.SyncBatchNorm.convert_sync_batchnorm(method)  # replaces batch norm children in place
        auxiliary = {id(p) for aux in method.auxiliaries() for p in aux.parameters}
        holder = _Objective(method, method.loss)
        ignored = [name for name, p in holder.named_parameters() if id(p) in auxiliary]
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(holder, ignored)
        self.main = self._wrap(holder)
        if self.ranks.rank > 0:
            # Reseeded after the weights are made (DDP broadcast rank 0's anyway): only augmentations differ.
            torch.manual_seed(torch.initial_seed() + self.ranks.rank * RANK_SEED_STRIDE)

    def _wrap(self, holder: _Objective) -> Callable:
        if not any(p.requires_grad for p in holder.parameters()):
            return holder  # DDP refuses a module with nothing to train; there is nothing to reduce either
        # A method may leave parameters out of its loss (FactorCL's encoders of a third modality), which DDP must
        # not wait for. static_graph: DDP learns which in the first step, as the loss uses the same parameters
        # every step; find_unused_parameters would search the graph at every step, and warn on every rank when
        # it finds none. device_ids None: the module lives on one device already.
        return nn.parallel.DistributedDataParallel(holder, device_ids=None, static_graph=True)

    def batches(self, split: Split, batch_size: int, generator: torch.Generator):
        """This rank's slice of each global batch, in steps every rank takes together; rows as the split numbers
        them. The same epoch order as one process draws (one randperm per epoch from `generator`)."""
        size, rank = self.ranks.world_size, self.ranks.rank
        if batch_size % size:
            raise HarnessError(f"batch_size {batch_size} (the global batch) does not split evenly among "
                               f"{size} ranks; --set batch_size to a multiple of {size}")
        if not self._checked:
            self._checked = True
            self._check_followers(split)
        order = torch.randperm(len(split), generator=generator)
        steps = [order[start : start + batch_size].tensor_split(size) for start in range(0, len(order), batch_size)]
        # A last batch with fewer rows than ranks would leave some rank without a row, and the others waiting
        # for it in the step's collectives: every rank drops it (at most world_size - 1 rows an epoch).
        steps = [chunks for chunks in steps if len(chunks[-1])]
        own = torch.cat([chunks[rank] for chunks in steps])
        # Each step's row counts, found by the step's first row (rows are unique within an epoch). Set when the
        # step runs (`loss`), not when its batch is drawn: on CUDA `fit` draws the next batch before it runs
        # the current step (train._ahead), and a short last batch would hand the step before it its counts.
        self._step_rows = {int(chunks[rank][0]): [len(chunk) for chunk in chunks] for chunks in steps}
        shard = split.take(own)  # this rank reads its rows only
        for (inputs, labels, rows), _chunks in zip(shard.batches(batch_size // size), steps, strict=True):
            yield inputs, labels, own[rows]

    def _check_followers(self, split: Split) -> None:
        """Before the first step, on every rank: each follower's training data (the rows it will read) and code
        are rank 0's, or every rank refuses the fit. Rank 0's record names its own data's fingerprint and commit;
        a follower's other data (another --data-dir copy on its node) would train the model unseen."""
        digest = hashlib.sha256()
        split.fingerprint_update(digest)
        mine = {"training data fingerprint": digest.hexdigest()[:16], "code commit": environment.git_commit()}
        everyone: list[Any] = [None] * self.ranks.world_size
        dist.all_gather_object(everyone, mine, group=self.ranks.control)
        lead = everyone[0]
        for rank, theirs in enumerate(everyone[1:], start=1):
            differ = [f"{what} {theirs[what]}, rank 0's {lead[what]}" for what in lead if theirs[what] != lead[what]]
            if differ:
                self.agreed = True  # every rank found the same and stops here: none waits in a collective
                raise RanksDisagree(
                    f"rank {rank} of {self.ranks.world_size} differs from rank 0: its {'; its '.join(differ)}. "
                    f"Every rank must train on the same data with the same code: give each node the same "
                    f"--data-dir contents (or $HARNESS_DATA_DIR) and the same checkout")

    def _this_step(self, batch) -> None:
        """Tell `gather` how many rows each rank holds in the step that trains on `batch`; for a batch not drawn
        by `batches` (a test's), None: `gather` asks the ranks."""
        gathering.set_step_rows(self._step_rows.get(int(batch.index[0])))

    def loss(self, batch):
        self._this_step(batch)
        return self.main(batch)

    def auxiliary(self, objective: Auxiliary) -> Auxiliary:
        """The objective, its loss called through a DDP wrapper of its own parameters (made once per fit)."""
        if id(objective) not in self._auxiliary:
            holder = _Objective(nn.ParameterList(objective.parameters), objective.loss)
            wrapped = self._wrap(holder)

            def loss(batch):
                self._this_step(batch)
                return wrapped(batch)

            self._auxiliary[id(objective)] = dataclasses.replace(objective, loss=loss)
        return self._auxiliary[id(objective)]

    def agree(self, first_bad: dict[str, torch.Tensor]) -> None:
        """Each watched loss's first non-finite step, the earliest over all ranks (-1: none), on every rank."""
        never = torch.iinfo(torch.long).max
        for bad in first_bad.values():  # the same keys in the same order on every rank: the same code ran
            earliest = torch.where(bad < 0, never, bad)
            dist.all_reduce(earliest, op=dist.ReduceOp.MIN)
            bad.copy_(torch.where(earliest == never, -1, earliest))

    def after_epoch(self, on_epoch, method: Method, epoch: int, metrics: dict[str, float]) -> None:
        """Rank 0 runs the callback (validation probe, MLflow, pruning) and says whether training goes on."""
        if self.ranks.rank == 0:
            try:
                if on_epoch is not None:
                    on_epoch(method, epoch, metrics)
            except BaseException:
                _send(self.ranks, {"stop": True})
                self.agreed = True
                raise
            _send(self.ranks, {"stop": False})
        elif _receive(self.ranks)["stop"]:
            self.agreed = True
            raise Stopped()


@contextlib.contextmanager
def replicas() -> Iterator[Alone | DataParallel]:
    """How `fit` trains: alone, or with the other ranks while a data-parallel command runs."""
    ranks = _RANKS
    if ranks is None or ranks.world_size == 1:
        yield Alone()
        return
    parallel = DataParallel(ranks)
    with gathering.across(dist.group.WORLD, ranks.rank, ranks.world_size):
        try:
            yield parallel
        except (DivergedError, Stopped, KeyboardInterrupt, Preempted):
            raise  # every rank saw the same (KeyboardInterrupt: Ctrl+C reached all of them)
        except (RuntimeError, MemoryError) as exc:
            if parallel.agreed:
                raise
            # A collective failed (a rank died) or this rank failed on its own: the others cannot go on.
            raise ranks_failed(ranks, exc) from None
        except BaseException:
            if not parallel.agreed:
                ranks.broken = True  # a defect: Python prints its traceback; torchrun stops the other ranks
            raise


def follower_logging() -> None:
    """Followers say only warnings: rank 0 speaks for the run."""
    if _RANKS is not None and _RANKS.rank > 0:
        for package in ("harness", "methods", "tasks"):
            logging.getLogger(package).setLevel(logging.WARNING)
