"""Real signals to real commands: SIGTERM (or SIGUSR1) mid-seed stops one process, `--workers 2` and
`--nproc 2` at a step's end with exit code 75 and the seeds' states kept, and the same command run again
records what one uninterrupted process records (data parallel: what an uninterrupted 2-rank run records, the
run identity saying 2 ranks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from harness.cli.app import main
from harness.running.checkpoint import STOP_AT_ENV
from harness.running.coordination import SEED_PREFIX
from harness.running.preemption import EXIT_CODE
from tests.fixtures import SLOW_CLIP_PAUSE_ENV
from tests.test_preemption import answer, checkpoints

pytestmark = pytest.mark.system  # several processes each: .ci/run runs these after the default suite

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--task", "tiny-synthetic", "--trials", "1", "--seeds", "2", "--epochs", "2"]


def arguments(where: Path) -> list[str]:
    return ["--results", str(where / "results"), "--workdir", str(where / "work"), "--no-progress", "--allow-dirty"]


def answers(where: Path, method: str = "slow-clip") -> list:
    return [answer(where, method, seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> list:
    where = tmp_path_factory.mktemp("one-process")
    assert main(["run", "--method", "slow-clip", *SWEEP, *arguments(where)]) == 0
    return answers(where)


def start(where: Path, *extra: str, pause: str = "0.3", env: dict | None = None,
          method: str = "slow-clip") -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", SLOW_CLIP_PAUSE_ENV: pause,
                        "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    command = [sys.executable, "-m", "tests.run_harness", "run", "--method", method, *SWEEP, *arguments(where)]
    return subprocess.Popen([*command, *extra],
                            cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, code: int) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == code, output[-3000:]
    return output


def wait_for_seed_training(process: subprocess.Popen, where: Path, timeout: float = 180) -> None:
    """Until some seed's claim is running in the sweep's default journal, then a few steps more."""
    journal = where / "work" / "optuna.journal"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        if journal.exists():
            try:
                storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
                claims = {key: value for study in storage.get_all_studies()
                          for key, value in storage.get_study_system_attrs(study._study_id).items()
                          if key.startswith(SEED_PREFIX)}
            except Exception:  # noqa: BLE001 - the journal may be mid-write
                claims = {}
            if any(claim.get("state") == "running" for claim in claims.values()):
                time.sleep(1.0)  # into the seed's training, past its set-up
                return
        time.sleep(0.1)
    raise AssertionError("no seed started training")


@pytest.mark.parametrize("sent, workers", [(signal.SIGTERM, "1"), (signal.SIGUSR1, "1"), (signal.SIGTERM, "2")],
                         ids=["sigterm", "sigusr1", "sigterm-2-workers"])
def test_a_signal_mid_seed_stops_at_a_step_and_the_rerun_records_the_one_process_answer(
        sent, workers, tmp_path, one_process):
    process = start(tmp_path, "--workers", workers)
    wait_for_seed_training(process, tmp_path)
    process.send_signal(sent)
    output = finish(process, EXIT_CODE)
    assert "run the same command again to resume" in output and "Traceback" not in output
    assert checkpoints(tmp_path)  # the seed in training (each worker's) kept its state
    finish(start(tmp_path, "--workers", workers, pause="0"), 0)
    assert answers(tmp_path) == one_process
    assert checkpoints(tmp_path) == []


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list:
    """The data-parallel reference: an uninterrupted run on 2 ranks (its identity says 2 ranks)."""
    where = tmp_path_factory.mktemp("two-ranks")
    finish(start(where, "--nproc", "2", pause="0"), 0)
    return answers(where)


def test_two_ranks_preempted_at_a_step_resume_to_the_uninterrupted_two_rank_records(tmp_path_factory):
    """SimCLR: each rank draws its augmentations from its own stream, which the checkpoint keeps per rank."""
    reference, preempted = tmp_path_factory.mktemp("two-ranks-simclr"), tmp_path_factory.mktemp("preempted")
    finish(start(reference, "--nproc", "2", method="simclr"), 0)
    finish(start(preempted, "--nproc", "2", method="simclr", env={STOP_AT_ENV: "3"}), EXIT_CODE)
    assert len(checkpoints(preempted)) == 1
    finish(start(preempted, "--nproc", "2", method="simclr"), 0)
    assert answers(preempted, "simclr") == answers(reference, "simclr")
    assert checkpoints(preempted) == []


def test_sigterm_to_a_two_rank_run_stops_both_ranks_at_one_step_and_the_rerun_resumes(tmp_path, two_ranks):
    process = start(tmp_path, "--nproc", "2")
    wait_for_seed_training(process, tmp_path)
    process.send_signal(signal.SIGTERM)
    output = finish(process, EXIT_CODE)
    assert "run the same command again to resume" in output and "Traceback" not in output
    assert len(checkpoints(tmp_path)) == 1
    finish(start(tmp_path, "--nproc", "2", pause="0"), 0)
    assert answers(tmp_path) == two_ranks
