"""Data-parallel training on the CPU with the gloo backend (harness.running.distributed).

* One step on 2 ranks x 64 rows gives the loss and the gradients of 1 process x 128 rows, for SimCLR,
  CLIP and FactorCL-SUP (its CLUB critics' own step too).
* `torchrun --nproc-per-node 2 -m ... run` trains, scores and records as one process does: one record
  per seed, saying 2 ranks trained it, and one MLflow parent run.
* A rank that dies ends the run with one line and no partial record.

Tolerance 1e-5: both sides compute the same float32 function of the same rows; what differs is the
order of sums. Each rank's encoder sums its gradient over 64 rows and DDP averages the two halves
(one process sums all 128 at once), and matrix products over 64 rows may block differently from
those over 128. Each reordered float32 sum of n terms moves by a few n * 2**-24 relative to the
sum of magnitudes, about 1e-6 here for the gradients of order 1 these models have; 1e-5 leaves a
margin of ten, while any real difference (a rank's negatives missing, a gradient not scaled back by
the world size, a rank's rows counted twice) changes the loss and gradients at the 1e-2 level or more.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import torch.multiprocessing as mp

from harness.api.task import Batch
from harness.results.records import read_records
from harness.running import distributed
from harness.running.environment import seed_everything
from tests.ranks import join_cpu_group
from tests.fixtures import TinySynthetic

ROOT = Path(__file__).resolve().parent.parent
ROWS, WORLD, TOLERANCE = 128, 2, 1e-5
CASES = ("simclr", "clip", "factorcl-sup")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Shifts:
    """A deterministic augmentation: the k-th call moves every row by the same function of its values
    and k, so one process and each rank draw the same views of a row."""

    def __init__(self):
        self.calls = 0

    def __call__(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + 0.1 * torch.sin(x * self.calls + self.calls)


def build(case: str, task):
    from harness.api.catalog import METHODS

    cls = METHODS.get(case)
    return cls(task, dict(cls.defaults))


def one_step(case: str, rank: int, world: int) -> dict:
    """The loss and gradients of one step on this rank's rows of the same 128, through the harness's
    data-parallel machinery (one process: straight through)."""
    task = TinySynthetic()
    split = task.load().train
    rows = torch.arange(ROWS).tensor_split(world)[rank]
    inputs, labels, _ = next(split.take(rows).batches(len(rows)))
    batch = Batch(inputs, labels, rows, Shifts())
    seed_everything(0)
    method = build(case, task)
    with distributed.replicas() as parallel:
        parallel.prepare(method)
        from harness.api.distributed import set_step_rows

        set_step_rows([ROWS // world] * world)
        out = parallel.loss(batch)
        loss = out["loss"] if isinstance(out, dict) else out
        loss.backward()
        found = {"loss": loss.detach().clone(),
                 "grads": {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}}
        for objective in method.auxiliaries():  # FactorCL's critics, stepped by their own DDP wrapper
            method.zero_grad(set_to_none=True)
            aux = parallel.auxiliary(objective).loss(batch)
            aux["loss"].backward()
            found["aux_loss"] = aux["loss"].detach().clone()
            found["aux_grads"] = {name: p.grad.clone() for name, p in method.named_parameters() if p.grad is not None}
    return found


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    """A spawned rank: join gloo, take one step of every case, rank 0 saves what it found."""
    join_cpu_group(rank, world, port)
    found = {case: one_step(case, rank, world) for case in CASES}
    found["ranks"] = distributed.current().world_size
    if rank == 0:
        torch.save(found, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.spawn(_rank_main, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out)


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_of_64_rows_step_as_one_process_of_128(case, two_ranks):
    assert two_ranks["ranks"] == WORLD
    alone, parallel = one_step(case, 0, 1), two_ranks[case]
    torch.testing.assert_close(parallel["loss"], alone["loss"], rtol=0, atol=TOLERANCE)
    assert parallel["grads"].keys() == alone["grads"].keys() and alone["grads"]
    for name, grad in alone["grads"].items():
        torch.testing.assert_close(parallel["grads"][name], grad, rtol=TOLERANCE, atol=TOLERANCE, msg=name)
    if "aux_loss" in alone:
        torch.testing.assert_close(parallel["aux_loss"], alone["aux_loss"], rtol=0, atol=TOLERANCE)
        for name, grad in alone["aux_grads"].items():
            torch.testing.assert_close(parallel["aux_grads"][name], grad, rtol=TOLERANCE, atol=TOLERANCE, msg=name)


def test_a_rank_holding_only_its_half_would_not_pass():
    """The equivalence test can fail: without the gather, a rank's loss over its own 64 rows is another loss."""
    half, whole = one_step("simclr", 0, WORLD), one_step("simclr", 0, 1)
    assert abs(float(half["loss"]) - float(whole["loss"])) > 100 * TOLERANCE


class NaNOnRank1Only:
    """Factory of a method whose loss (its own rows' mean, not gathered) turns NaN on rank 1 alone, at step 2."""

    @staticmethod
    def build(task):
        from harness.api.distributed import rank
        from tests.fixtures import DivergesOnOddSeeds

        class Method(DivergesOnOddSeeds):
            steps = 0

            def loss(self, batch):
                self.steps += 1
                value = self.encoders.joint(batch.inputs).pow(2).mean()
                return value * float("nan") if rank() == 1 and self.steps == 2 else value

        return Method(task, {})


def _agreement_main(rank: int, world: int, port: int, out: str) -> None:
    """A spawned rank: a fit that rank 0's callback prunes, then one that diverges on rank 1 alone."""
    import optuna

    from harness.api.errors import DivergedError
    from harness.running.train import TrainConfig, fit

    join_cpu_group(rank, world, port)
    task = TinySynthetic()
    data = task.load()
    config = TrainConfig(epochs=3, batch_size=64, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                         progress=False)
    outcome = {}

    def prune(method, epoch, metrics):
        raise optuna.TrialPruned()

    seed_everything(0)
    try:
        stats = fit(build("simclr", task), data, config, torch.Generator().manual_seed(0), prune if rank == 0 else None)
        outcome["pruned"] = f"trained {stats.epochs_run} epochs"
    except optuna.TrialPruned:
        outcome["pruned"] = "pruned"
    except distributed.Stopped:
        outcome["pruned"] = "stopped with rank 0"
    try:
        fit(NaNOnRank1Only.build(task), data, config, torch.Generator().manual_seed(0))
        outcome["nan"] = "trained"
    except DivergedError as exc:
        outcome["nan"] = str(exc)
    everyone = [None] * world
    torch.distributed.all_gather_object(everyone, outcome)  # reached by every rank: no collective left waiting
    if rank == 0:
        torch.save(everyone, out)
    torch.distributed.destroy_process_group()


def test_ranks_stop_together_when_rank_0_prunes_or_one_rank_diverges(tmp_path):
    out = tmp_path / "agreement.pt"
    mp.spawn(_agreement_main, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    first, second = torch.load(out)
    assert (first["pruned"], second["pruned"]) == ("pruned", "stopped with rank 0")
    assert first["nan"] == second["nan"]
    assert first["nan"].startswith("loss became non-finite at epoch 1, step 2 ")


class _Ranks:
    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size


def test_each_rank_reads_a_disjoint_shard_and_together_they_cover_the_epoch():
    split = TinySynthetic().load().train.take(torch.arange(301))  # 2 global batches of 128, then 45 rows
    shards = []
    for rank in range(WORLD):
        parallel = distributed.DataParallel(_Ranks(rank, WORLD))
        parallel._checked = True  # no group here to compare the ranks' data in (tests/test_checked_followers.py)
        steps = parallel.batches(split, ROWS, torch.Generator().manual_seed(3))
        shards.append([rows for _inputs, _labels, rows in steps])
    assert [len(s) for s in shards] == [3, 3]  # every rank takes every step
    assert [[len(r) for r in s] for s in shards] == [[64, 64, 23], [64, 64, 22]]
    seen = torch.cat([rows for shard in shards for rows in shard])
    assert sorted(seen.tolist()) == list(range(len(split)))  # disjoint, and the whole epoch
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(3))  # one process's order
    for step in range(3):
        assert torch.equal(torch.cat([shards[0][step], shards[1][step]]), order[step * ROWS : (step + 1) * ROWS])


def test_a_global_batch_that_does_not_split_among_the_ranks_is_refused_in_one_line():
    from harness.api.errors import HarnessError

    parallel = distributed.DataParallel(_Ranks(0, 3))
    with pytest.raises(HarnessError, match="batch_size 128 .* does not split evenly among 3 ranks"):
        next(parallel.batches(TinySynthetic().load().train, ROWS, torch.Generator()))


# -- whole commands through torchrun ------------------------------------------------------------------


def harness_env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}


def command(tmp_path: Path, *args: str, method: str = "simclr") -> list[str]:
    return [*args, "run", "--method", method, "--task", "tiny-synthetic", "--trials", "2", "--seeds", "2",
            "--set", "batch_size=64", "--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-progress", "--allow-dirty"]


def test_torchrun_with_two_ranks_records_each_seed_once_and_says_two_ranks_trained_it(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(command(tmp_path, str(torchrun), "--standalone", "--nproc-per-node", "2", "-m",
                                  "tests.run_harness"),
                          cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = list(read_records(tmp_path / "results"))
    assert sorted(r.seed for r in records) == [0, 1]
    for record in records:
        assert record.protocol["world_size"] == 2 and record.identity["protocol"]["world_size"] == 2
        assert record.protocol["batch_size"] == 64  # the global batch: 32 rows on each rank
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("harness/tiny-synthetic").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_name for r in parents] == ["simclr"]
    assert sorted(r.info.run_name for r in runs if r.info.run_name.startswith("seed-")) == ["seed-0", "seed-1"]
    # Run again as one process: a record made by 2 ranks does not stand for it, and says why.
    again = subprocess.run(command(tmp_path, sys.executable, "-m", "tests.run_harness") + ["--keep-old"],
                           cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=600)
    assert "recorded with 2 rank(s), asked for 1" in again.stderr, again.stderr[-3000:]


def test_a_rank_that_dies_fails_the_run_in_one_line_and_leaves_no_record(tmp_path):
    done = subprocess.run(command(tmp_path, sys.executable, "-m", "tests.run_harness", method="dies-on-rank-1")
                          + ["--nproc", "2"],
                          cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "rank 1 of 2" in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert not list((tmp_path / "results").glob("records/*/dies-on-rank-1/*.json"))


@pytest.mark.parametrize("how", ["--nproc", "torchrun"])
@pytest.mark.parametrize("pinned", [["--device", "cuda:1"], ["--devices", "cuda:1"]])
def test_one_gpu_named_for_every_rank_is_refused_in_one_line(how, pinned, tmp_path, monkeypatch, capsys):
    from harness.cli import main

    if how == "torchrun":
        monkeypatch.setenv("WORLD_SIZE", "2")
    args = command(tmp_path) + pinned + (["--nproc", "2"] if how == "--nproc" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"error: {pinned[0]} cuda:1 would put every data-parallel rank on that one GPU" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "results").exists()


def _stalled_main(rank: int, world: int, port: int, out: str) -> None:
    """Rank 1 hangs (sleeps) before the fit; rank 0 waits for it in the fit's first collective."""
    import time

    from harness.running.train import TrainConfig, fit

    os.environ["HARNESS_STEP_TIMEOUT_MIN"] = str(STALL_TIMEOUT_S / 60)  # read when the groups start
    join_cpu_group(rank, world, port)
    task = TinySynthetic()
    config = TrainConfig(epochs=1, batch_size=64, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                         progress=False)
    method, data = build("simclr", task), task.load()
    if rank == 1:
        time.sleep(STALL_S)
    started = time.monotonic()
    try:
        fit(method, data, config, torch.Generator().manual_seed(0))
        outcome = "trained"
    except distributed.RanksFailed as exc:
        outcome = str(exc)
    if rank == 0:
        torch.save((outcome, time.monotonic() - started), out)


STALL_TIMEOUT_S, STALL_S = 2.0, 30.0


@pytest.mark.system
def test_a_rank_that_hangs_ends_the_run_after_the_step_timeout_not_gloos_thirty_minutes(tmp_path):
    out = tmp_path / "stalled.pt"
    mp.spawn(_stalled_main, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    outcome, waited = torch.load(out)
    assert outcome.startswith("rank 0 of 2 stopped: RuntimeError: ") and "imed out" in outcome, outcome
    assert STALL_TIMEOUT_S <= waited < STALL_S / 2  # the timeout given, not the hung rank's return, ended it


@pytest.mark.parametrize("given", ["soon", "0", "-5", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_refused_in_one_line(given, monkeypatch):
    from harness.api.errors import HarnessError

    monkeypatch.setenv("HARNESS_STEP_TIMEOUT_MIN", given)
    with pytest.raises(HarnessError, match=f"HARNESS_STEP_TIMEOUT_MIN={given}: give a positive number of minutes"):
        distributed.start(torch.device("cpu"))
