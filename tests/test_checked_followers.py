"""Followers check their training data and code against rank 0's before the first step
(harness.running.distributed.DataParallel): a node with another copy of the data, or other code, is
refused in one line naming the rank and what differs, on every rank together, so none is left waiting.

The expected values are one process's: rank 0's fingerprint in the refusal is the fingerprint of the
training split one process loads, and the run that follows a refusal, with the data agreeing, records
under the fingerprint one process computes for the task.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from harness.results.records import read_records
from harness.running import distributed, environment
from harness.running.train import TrainConfig, fit
from tests.ranks import join_cpu_group
from tests.fixtures import OTHER_LABELS_ON_RANK_ENV, OtherLabelsOnRank
from tests.test_distributed import WORLD, build, free_port, harness_env


def train_fingerprint(data) -> str:
    digest = hashlib.sha256()
    data.train.fingerprint_update(digest)
    return digest.hexdigest()[:16]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    """Three fits in one group: rank 1 with shuffled labels, rank 1 with another commit, then agreeing."""
    join_cpu_group(rank, world, port)
    task = OtherLabelsOnRank()
    config = TrainConfig(epochs=1, batch_size=64, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                         progress=False)
    real_commit, outcome = environment.git_commit(), {}
    for case in ("other labels", "other commit", "agreeing"):
        os.environ[OTHER_LABELS_ON_RANK_ENV] = "1" if case == "other labels" else ""
        environment.git_commit = (lambda: "a1b2c3d4e5f6") if case == "other commit" and rank == 1 else (
            lambda: real_commit)
        try:
            stats = fit(build("simclr", task), task.load(), config, torch.Generator().manual_seed(0))
            outcome[case] = f"trained {stats.epochs_run} epoch"
        except distributed.RanksDisagree as exc:
            outcome[case] = str(exc)
    everyone = [None] * world
    torch.distributed.all_gather_object(everyone, outcome)  # reached by every rank: no collective left waiting
    if rank == 0:
        torch.save(everyone, out)
    torch.distributed.destroy_process_group()


def test_a_follower_with_other_labels_or_other_code_is_refused_on_every_rank_and_the_group_goes_on(tmp_path):
    out = tmp_path / "outcome.pt"
    mp.spawn(_rank_main, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    first, second = torch.load(out)
    assert first == second  # every rank stopped at the same place, with the same line
    alone = train_fingerprint(OtherLabelsOnRank().load())  # no RANK here: one process's data
    shuffled = first["other labels"]
    assert shuffled.startswith("rank 1 of 2 differs from rank 0: its training data fingerprint ")
    assert f", rank 0's {alone}." in shuffled and "code commit" not in shuffled
    commit = first["other commit"]
    assert commit.startswith("rank 1 of 2 differs from rank 0: its code commit a1b2c3d4e5f6, rank 0's ")
    assert "fingerprint" not in commit
    assert first["agreeing"] == "trained 1 epoch"


@pytest.mark.system
def test_harness_run_with_a_follower_holding_other_data_is_refused_in_one_line_and_writes_nothing(tmp_path):
    args = [sys.executable, "-m", "tests.run_harness", "run", "--method", "simclr", "--task", "other-labels-on-rank",
            "--trials", "1", "--seeds", "1", "--nproc", "2", "--results", str(tmp_path / "results"),
            "--workdir", str(tmp_path / "work"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--no-progress", "--allow-dirty"]
    refused = subprocess.run(args, cwd=tmp_path, env=harness_env() | {OTHER_LABELS_ON_RANK_ENV: "1"},
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, refused.stderr[-3000:]
    alone = OtherLabelsOnRank().load()
    assert errors[0].startswith("error: rank 1 of 2 differs from rank 0: its training data fingerprint ")
    assert f"rank 0's {train_fingerprint(alone)}." in errors[0]
    assert "Traceback" not in refused.stderr
    assert not list(read_records(tmp_path / "results"))
    # The same command with the follower's data fixed continues, and records what one process's data is.
    agreed = subprocess.run(args, cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=300)
    assert agreed.returncode == 0, agreed.stderr[-3000:]
    records = list(read_records(tmp_path / "results"))
    assert [r.seed for r in records] == [0]
    assert records[0].task["fingerprint"] == alone.fingerprint()
