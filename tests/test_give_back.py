"""A give-back survives being killed anywhere inside it, and deaths are counted once per lost process.

A give-back is several storage writes (its decision, the retry, the attempt marked given back, then failed).
A process that SIGKILLs itself just before each one (harness.running.coordination.retries.STOP_ENV), and the
next worker that asks, leave the storage as one uninterrupted give-back does: the same trials in the same
slots, the same deaths, the same retry, and the next trial in the same slot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.running.coordination import (ABANDONED_KEY, DEATHS_KEY, FAILED_BECAUSE_KEY, GIVE_BACK_KEY, LEASE_ENV,
                                          MAX_ATTEMPTS, RETRY_HISTORY_KEY, SEED_PREFIX, SLOT_KEY, STOP_ENV,
                                          Coordinator, mutex_for)
from harness.running.sweep_state import sweep_states
from harness.running.tuning import open_storage, open_study, sampler_for, spent_trials
from tests.servers import postgres_bindir, postgres_server

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 3

# One worker: it finishes slot 0, then gives slot 1 back `deaths` times as a process that lost a rank does
# (each a death); the last give-back is the one that may stop at STOP_ENV's step.
WORKER = textwrap.dedent("""
    import os, sys
    from harness.running.coordination import STOP_ENV, Coordinator, mutex_for
    from harness.running.tuning import open_storage, open_study, sampler_for
    spec, work, deaths, step = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    spec = None if spec == "journal" else spec
    study = open_study("t/m", open_storage(spec, work))
    worker = Coordinator(mutex_for(spec, work))
    first = worker.claim_trial(study, 3, sampler_for)
    first.suggest_float("lr", 1e-4, 1e-2, log=True)
    worker.finish_trial(study, first, 0.5)
    for attempt in range(deaths):
        trial = worker.claim_trial(study, 3, sampler_for)
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        if attempt == deaths - 1 and step:
            os.environ[STOP_ENV] = step
        worker.give_back_trial(study, trial, preempted=False)
    worker.close()
""")


def run_worker(spec: str, work: Path, deaths: int, step: str = "") -> int:
    env = os.environ | {"PYTHONPATH": str(ROOT), LEASE_ENV: "60"}
    done = subprocess.run([sys.executable, "-c", WORKER, spec, str(work), str(deaths), step], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
    return done.returncode


def outcome(spec: str, work: Path) -> tuple[list, object]:
    """The next worker's view once it asks for a trial (completing whatever give-back was left), and the
    slot and number of the trial it gets: everything a rerun's answer depends on."""
    study = open_study("t/m", open_storage(None if spec == "journal" else spec, work))
    survivor = Coordinator(mutex_for(None if spec == "journal" else spec, work))
    taken = survivor.claim_trial(study, BUDGET, sampler_for)
    got = None if taken is None else (taken.number, survivor.trial_slot(taken),
                                      taken.suggest_float("lr", 1e-4, 1e-2, log=True),
                                      study._storage.get_trial_system_attrs(taken._trial_id).get(DEATHS_KEY, 0))
    survivor.close()
    trials = [(t.number, t.state.name, t.system_attrs.get(SLOT_KEY), t.system_attrs.get(ABANDONED_KEY, False),
               t.system_attrs.get(DEATHS_KEY, 0), t.system_attrs.get(RETRY_HISTORY_KEY),
               t.system_attrs.get(FAILED_BECAUSE_KEY), t.params)
              for t in study.get_trials(deepcopy=False) if t.number != getattr(taken, "number", None)]
    return trials, got


STEPS = [(1, step) for step in ("decision", "retry", "abandoned", "failed")] + \
        [(MAX_ATTEMPTS, step) for step in ("decision", "failed_because", "failed")]


@pytest.mark.parametrize("deaths,step", STEPS)
def test_a_give_back_killed_before_any_of_its_writes_ends_as_an_uninterrupted_one(deaths, step, tmp_path):
    assert run_worker("journal", tmp_path / "whole", deaths) == 0
    expected = outcome("journal", tmp_path / "whole")
    assert run_worker("journal", tmp_path / "killed", deaths, step) == -signal.SIGKILL  # it did stop there
    if step != "decision":  # `harness status`, reading without the lock, counts a decided give-back as it ends
        (state,) = sweep_states(open_storage(None, tmp_path / "killed"))
        assert (state.done, state.running, state.retried + state.failed) == (1, 0, deaths)
    assert outcome("journal", tmp_path / "killed") == expected
    trials, got = expected
    if deaths < MAX_ATTEMPTS:
        assert got[:2] == (trials[-1][0] + 1, 1)  # the retry, in slot 1, with the lost attempt's parameters
        assert got[2] == trials[-1][7]["lr"] and got[3] == deaths  # each lost process counted once
    else:
        assert [t[4] for t in trials if t[2] == 1] == [0, 1, 2]  # each lost process counted once
        assert got[1] == 2 and "killed 3 times" in trials[-1][6]  # slot 1 failed for good; slot 2 is next
        assert "memory is the usual cause" not in trials[-1][6]


@pytest.mark.system
def test_a_give_back_killed_halfway_on_postgresql_ends_as_an_uninterrupted_one(tmp_path):
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL is not installed here (no initdb); CI installs it (.ci/run)")
    with postgres_server() as url:
        assert run_worker(url, tmp_path / "work", 1, "abandoned") == -signal.SIGKILL
        with mutex_for(url, tmp_path / "work").hold():  # `harness status` reads without the workers' lock
            status = subprocess.run([sys.executable, "-m", "tests.run_harness", "status", "--storage", url,
                                     "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "results")],
                                    env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                                    timeout=120)
        assert status.returncode == 0 and "1 done, 0 running, 0 failed, 1 retried" in status.stdout, status.stderr
        trials, got = outcome(url, tmp_path / "work")
    assert [t[:6] for t in trials] == [(0, "COMPLETE", 0, False, 0, None), (1, "FAIL", 1, True, 0, None)]
    assert got[:2] == (2, 1) and got[2] == trials[1][7]["lr"]


@pytest.fixture
def study(tmp_path):
    return open_study("t/m", open_storage(None, tmp_path))


def test_a_preempted_trial_counts_no_death_and_a_lost_process_one(study, tmp_path):
    worker = Coordinator(mutex_for(None, tmp_path))
    for preempted in (True, True, True, False):
        trial = worker.claim_trial(study, 1)
        worker.give_back_trial(study, trial, preempted=preempted)
    retry = study.get_trials()[-1]
    assert retry.state == TrialState.WAITING and retry.system_attrs[DEATHS_KEY] == 1  # 3 preemptions: none
    worker.close()


def test_a_preempted_seed_counts_no_death_and_a_lost_process_one(study, tmp_path):
    accept_all = lambda record: True  # noqa: E731
    worker = Coordinator(mutex_for(None, tmp_path))
    for preempted in (True, True, True, False, False):
        assert worker.claim_seed(study, [0], accept_all)[0] == 0
        worker.give_back_seed(study, 0, preempted=preempted)
    claim = study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}0"]
    assert claim["state"] == "running" and claim["deaths"] == 2
    worker.give_back_seed(study, 0, preempted=False)  # not held any more: nothing to give back, nothing counted
    assert study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}0"]["deaths"] == 2
    assert worker.claim_seed(study, [0], accept_all)[0] == 0
    worker.give_back_seed(study, 0, preempted=False)  # the third lost process: failed for good, said neutrally
    assert worker.claim_seed(study, [0], accept_all)[0] is None
    claim = study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}0"]
    assert claim["state"] == "failed" and "killed 3 times" in claim["reason"] and "usual cause" not in claim["reason"]
    worker.close()


def test_a_result_told_after_another_worker_decided_to_give_the_trial_back_is_dropped(study, tmp_path):
    stalled, other = Coordinator(mutex_for(None, tmp_path)), Coordinator(mutex_for(None, tmp_path))
    trial = stalled.claim_trial(study, 1)
    # The other worker decided to give it back (its lease ran out) and was killed before it completed that.
    study._storage.set_trial_system_attr(trial._trial_id, GIVE_BACK_KEY, {"deaths": 1, "failed_because": None})
    stalled.finish_trial(study, trial, 0.9)
    assert study.get_trials()[0].state == TrialState.RUNNING  # not COMPLETE: the decision stands
    retry = other.claim_trial(study, 1)
    assert (retry.number, other.trial_slot(retry)) == (1, 0)
    assert study.get_trials()[0].state == TrialState.FAIL and spent_trials(study) == 0
    stalled.close(), other.close()


@pytest.mark.system
def test_a_data_parallel_run_that_lost_a_rank_counts_one_death(tmp_path):
    """Rank 1 SIGKILLed mid-trial: the rank group is one lost process, whether rank 0 gave the trial back
    itself or was stopped first and the next worker found its lease dead."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "-m", "tests.run_harness", "run", "--method", "dies-on-rank-1", "--task",
                           "tiny-synthetic", "--trials", "2", "--seeds", "1", "--set", "batch_size=64", "--nproc",
                           "2", "--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-progress",
                           "--allow-dirty"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "rank 1 of 2" in done.stderr, done.stderr[-3000:]
    storage = open_storage(None, tmp_path / "work")
    (summary,) = storage.get_all_studies()
    study = open_study(summary.study_name, storage)
    next_worker = Coordinator(mutex_for(None, tmp_path / "work"))
    retry = next_worker.claim_trial(study, 2)
    next_worker.close()
    attrs = study._storage.get_trial_system_attrs(retry._trial_id)
    assert (attrs[SLOT_KEY], attrs[RETRY_HISTORY_KEY], attrs[DEATHS_KEY]) == (0, [0], 1)
