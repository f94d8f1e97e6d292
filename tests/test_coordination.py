"""The coordinator's decisions, on a real journal storage: the trial budget holds across workers, a seed
has one holder at a time, and a worker that stopped renewing its lease loses its trial or seed."""

from __future__ import annotations

import socket

import optuna
import pytest
from optuna.trial import TrialState

from harness.running.coordination import ABANDONED_KEY, LEASE_ENV, LEASE_KEY, SEED_PREFIX, WAIT, Coordinator, mutex_for
from harness.running.tuning import open_storage, open_study, spent_trials


@pytest.fixture
def study(tmp_path):
    return open_study("tiny/clip", open_storage(None, tmp_path))


def worker(tmp_path) -> Coordinator:
    return Coordinator(mutex_for(None, tmp_path))


def test_the_budget_counts_every_workers_running_and_finished_trials(study, tmp_path):
    first, second = worker(tmp_path), worker(tmp_path)
    a = first.claim_trial(study, budget=2)
    b = second.claim_trial(study, budget=2)
    assert isinstance(a, optuna.Trial) and isinstance(b, optuna.Trial)
    assert first.claim_trial(study, budget=2) == WAIT  # two are running: the budget is taken
    first.finish_trial(study, a, 0.5)
    assert second.claim_trial(study, budget=2) == WAIT  # b still runs
    second.finish_trial(study, b, None, TrialState.PRUNED)
    assert first.claim_trial(study, budget=2) is None  # spent: tuning is over
    assert spent_trials(study) == 2


def test_a_trial_whose_lease_ran_out_is_retried_with_its_parameters_and_not_counted(study, tmp_path, monkeypatch):
    monkeypatch.setenv(LEASE_ENV, "0")  # every lease is already out
    lost = worker(tmp_path).claim_trial(study, budget=1)
    lost.suggest_float("lr", 1e-4, 1e-2, log=True)
    monkeypatch.setenv(LEASE_ENV, "60")
    retry = worker(tmp_path).claim_trial(study, budget=1)
    assert isinstance(retry, optuna.Trial) and retry.number != lost.number
    assert retry.suggest_float("lr", 1e-4, 1e-2, log=True) == lost.params["lr"]
    trials = study.get_trials()
    assert trials[lost.number].state == TrialState.FAIL and trials[lost.number].system_attrs[ABANDONED_KEY]
    assert spent_trials(study) == 0  # the lost trial does not count against the budget


def test_a_dead_local_worker_loses_its_trial_at_once(study, tmp_path):
    trial = worker(tmp_path).claim_trial(study, budget=1)
    study._storage.set_trial_system_attr(trial._trial_id, LEASE_KEY,  # a live lease, held by no living process
                                         {"owner": "nohost:1:x", "expires": 4e9})
    assert worker(tmp_path).claim_trial(study, budget=1) == WAIT  # another machine's lease is honoured
    study._storage.set_trial_system_attr(trial._trial_id, LEASE_KEY,
                                         {"owner": f"{socket.gethostname()}:999999:x", "expires": 4e9})
    assert isinstance(worker(tmp_path).claim_trial(study, budget=1), optuna.Trial)


def test_a_seed_has_one_holder_until_it_is_settled_or_its_lease_runs_out(study, tmp_path, monkeypatch):
    first, second = worker(tmp_path), worker(tmp_path)
    accept_all = lambda record: True  # noqa: E731
    assert first.claim_seed(study, [0, 1], accept_all) == (0, [])
    assert second.claim_seed(study, [0, 1], accept_all) == (1, [])
    assert second.claim_seed(study, [0, 1], accept_all) == (None, [])  # both held
    first.finish_seed(study, 0, first.seed_claim_id(study, 0), {"protocol": {}, "seed": 0})
    assert set(second.settled_seeds(study, [0, 1], accept_all)) == {0}
    assert second.settled_seeds(study, [0], lambda record: False) == {}  # a record under another protocol
    held = study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}1"]
    monkeypatch.setattr("harness.running.coordination.time.time", lambda: held["lease"]["expires"] + 1)
    assert first.claim_seed(study, [0, 1], accept_all) == (1, [held["claim_id"]])  # taken over, old run named
    second.finish_seed(study, 1, held["claim_id"], {"protocol": {}, "seed": 1})  # the stalled holder comes back
    assert study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}1"]["state"] == "running"


def test_a_worker_that_loses_the_race_to_create_a_shared_value_discards_its_own(study, tmp_path):
    discarded = []

    def create_while_another_worker_wins():
        study._storage.set_study_system_attr(study._study_id, "parent", "run-a")  # the winner, meanwhile
        return "run-b"

    assert worker(tmp_path).shared_value(study, "parent", create_while_another_worker_wins, discarded.append) \
        == "run-a"
    assert discarded == ["run-b"]
    assert worker(tmp_path).shared_value(study, "parent", lambda: "run-c", discarded.append) == "run-a"
    assert discarded == ["run-b"]  # found before anything was created
