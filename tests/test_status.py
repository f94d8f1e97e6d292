"""`harness status` says, per pair, what is done, running, failed, retried, held (by whom) and left, on every
storage workers use (PostgreSQL: tests/test_faults.py); a command that would join a running sweep with
another definition is refused in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.cli.app import main
from harness.running.coordination import DEFINITION_KEY, LEASE_ENV, Coordinator, mutex_for
from harness.running.tuning import open_storage, open_study
from tests.test_records import make_record
from harness.results.records import write_record

SWEEP = {"task": "t", "method": "m", "trials": 4, "seeds": 3, "epochs": 1, "fixed": {"batch_size": 64}}


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_status_says_per_pair_what_is_done_running_failed_retried_held_and_left(kind, tmp_path, capsys,
                                                                                  monkeypatch):
    work = tmp_path / "work"
    spec = None if kind == "journal" else f"sqlite:///{work / 'optuna.db'}"
    study = open_study("t@1/m@1/e1/abc", open_storage(spec, work))
    mine, other = Coordinator(mutex_for(spec, work)), Coordinator(mutex_for(spec, work))
    mine.join(study, SWEEP)
    other.join(study, SWEEP)
    mine.finish_trial(study, mine.claim_trial(study, 4), 0.5)
    monkeypatch.setenv(LEASE_ENV, "0")
    dying = Coordinator(mutex_for(spec, work))
    dying.claim_trial(study, 4)
    dying.close()  # its heartbeat stops, as a killed worker's does
    monkeypatch.setenv(LEASE_ENV, "60")
    claimed_at = time.time()
    retry = mine.claim_trial(study, 4)  # gives the dead attempt back and takes up its retry
    other.finish_trial(study, other.claim_trial(study, 4), None, TrialState.FAIL)  # a trial that diverged
    seed, _ = mine.claim_seed(study, [0, 1, 2], lambda record: True)
    mine.finish_seed(study, seed, mine.seed_claim_id(study, seed), {"seed": 0})
    write_record(tmp_path / "results", make_record(seed=0, task={"name": "t"}, method={"name": "m"}))
    assert other.claim_seed(study, [0, 1, 2], lambda record: True)[0] == 1
    capsys.readouterr()
    storage = ["--storage", spec] if spec else []
    assert main(["status", *storage, "--workdir", str(work), "--results", str(tmp_path / "results")]) == 0
    # a lease's age is whatever the clock says since it was taken, so the lines carry it as a pattern bounded by
    # the time this test has run since the first of the two claims
    most = time.time() - claimed_at
    age = re.compile(r"renewed (\d+) s ago")
    lines = [line.split(None, 1) for line in capsys.readouterr().out.splitlines()[2:]]
    ages = [int(age.search(text).group(1)) for _, text in lines[2:]]
    assert all(0 <= seconds <= round(most) + 1 for seconds in ages), (ages, most)
    lines = [[kind, age.sub("renewed N s ago", text)] for kind, text in lines]
    assert lines == [
        ["trials", "1 done, 1 running, 1 failed, 1 retried; 1 to start"],
        ["seeds", f"1 (0) settled, 1 (1) running, 0 failed; 1 to start; 1 of 3 records in {tmp_path / 'results'}"],
        ["held", f"trial {retry.number} (slot 1) by here pid {os.getpid()}, renewed N s ago"],
        ["held", f"seed 1 by here pid {os.getpid()}, renewed N s ago"],
    ]
    mine.close()
    other.close()


def test_status_of_a_storage_that_holds_no_sweep_is_one_line(tmp_path, capsys):
    assert main(["status", "--workdir", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "nowhere").exists()  # nothing created


def test_a_command_joining_a_running_sweep_with_another_budget_is_refused_in_one_line(harness_run, capsys):
    sweep = ("--method", "clip", "--task", "tiny-synthetic", "--seeds", "1")
    assert harness_run(*sweep, "--trials", "1") == 0
    storage = open_storage(None, harness_run.workdir)
    (summary,) = storage.get_all_studies()
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    running = Coordinator(mutex_for(None, harness_run.workdir))  # a worker elsewhere still runs it
    running.join(study, storage.get_study_system_attrs(summary._study_id)[DEFINITION_KEY]["definition"])
    capsys.readouterr()
    # --force, so its record of a 1-trial budget may be replaced: the clash, not the record, is refused.
    assert harness_run(*sweep, "--trials", "2", "--force") == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "being run by 1 worker(s)" in error[0] and "asks for 2 trials" in error[0]
    assert not list(harness_run.results.rglob("replaced"))  # refused: the record it would replace is in place
    running.close()
    assert harness_run(*sweep, "--trials", "2", "--force") == 0  # once it is done, a larger budget extends the study


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_status_answers_while_a_worker_holds_the_workers_lock(kind, tmp_path):
    """A read is a snapshot: it never waits on the workers (a stopped holder of the lock would block it)."""
    work = tmp_path / "work"
    spec = None if kind == "journal" else f"sqlite:///{work / 'optuna.db'}"
    open_study("t@1/m@1/e1/abc", open_storage(spec, work))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    storage = ["--storage", spec] if spec else []
    with mutex_for(spec, work).hold():
        done = subprocess.run([sys.executable, "-m", "tests.run_harness", "status", *storage, "--workdir", str(work),
                               "--results", str(tmp_path / "results")],
                              env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "t/m: definition not stored" in done.stdout
