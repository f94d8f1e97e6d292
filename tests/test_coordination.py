"""The coordinator's decisions, on a real journal storage: the trial budget holds across workers, a seed
has one holder at a time, and a worker that stopped renewing its lease loses its trial or seed."""

from __future__ import annotations

import socket

import optuna
import pytest
from optuna.trial import TrialState

from harness.api.errors import HarnessError
from harness.running.coordination import (ABANDONED_KEY, DEFINITION_KEY, FAILED_BECAUSE_KEY, LEASE_ENV, LEASE_KEY,
                                          MAX_ATTEMPTS, RETRY_HISTORY_KEY, RETRY_OF_KEY, SEED_PREFIX, WAIT,
                                          Coordinator, mutex_for)
from harness.running.tuning import open_storage, open_study, sampler_for, spent_trials, trial_history


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
    monkeypatch.setattr("harness.running.coordination.leases.time.time", lambda: held["lease"]["expires"] + 1)
    assert first.claim_seed(study, [0, 1], accept_all) == (1, [held["claim_id"]])  # taken over, old run named
    # The stalled holder comes back: it is told so, and writes nothing.
    assert second.finish_seed(study, 1, held["claim_id"], {"protocol": {}, "seed": 1}) is False
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


def test_a_retry_fills_the_slot_it_repeats_with_its_parameters_and_says_which_trial_it_repeats(study, tmp_path,
                                                                                              monkeypatch):
    """The slot seeds the sampler and the training, so a retry draws and trains what the lost attempt would
    have, and the trials after it draw what they draw in a run where nobody died."""
    slots = []

    def seeded(slot):
        slots.append(slot)
        return sampler_for(slot)

    first = worker(tmp_path)
    done = first.claim_trial(study, budget=3, sampler_for=seeded)
    done.suggest_float("lr", 1e-4, 1e-2, log=True)
    first.finish_trial(study, done, 0.5)
    monkeypatch.setenv(LEASE_ENV, "0")  # this worker's lease is out at once: it "dies" holding slot 1
    dying = worker(tmp_path)
    lost = dying.claim_trial(study, budget=3, sampler_for=seeded)
    lost.suggest_float("lr", 1e-4, 1e-2, log=True)
    assert dying.trial_slot(lost) == 1
    monkeypatch.setenv(LEASE_ENV, "60")
    survivor = worker(tmp_path)
    retry = survivor.claim_trial(study, budget=3, sampler_for=seeded)
    assert survivor.trial_slot(retry) == 1 and retry.number == 2  # Optuna numbers it anew; its slot is kept
    assert retry.suggest_float("lr", 1e-4, 1e-2, log=True) == lost.params["lr"]
    attrs = study._storage.get_trial_system_attrs(retry._trial_id)
    assert attrs[RETRY_OF_KEY] == lost.number and attrs[RETRY_HISTORY_KEY] == [lost.number]  # as Optuna links
    survivor.finish_trial(study, retry, 0.7)
    assert survivor.lost_trial_claims() == [study.trials[lost.number].system_attrs["harness:claim"]]
    after = survivor.claim_trial(study, budget=3, sampler_for=seeded)
    assert survivor.trial_slot(after) == 2 and slots == [0, 1, 1, 2]  # not seeded by the trial count (3)
    assert after.suggest_float("lr", 1e-4, 1e-2, log=True) == draw_alone(tmp_path, slot=2)
    survivor.finish_trial(study, after, 0.6)
    # The history lists exactly the trials the budget counts, by slot: the given-back attempt is not there.
    assert [(t["number"], t["value"]) for t in trial_history(study, 3)] == [(0, 0.5), (1, 0.7), (2, 0.6)]


def draw_alone(tmp_path, slot: int) -> float:
    """What slot `slot` draws in a study where no worker died (the first draws need no history)."""
    study = open_study("alone", open_storage(str(tmp_path / "alone.journal"), tmp_path))
    one = worker(tmp_path)
    for _ in range(slot + 1):
        trial = one.claim_trial(study, budget=slot + 1, sampler_for=sampler_for)
        value = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        one.finish_trial(study, trial, 0.5)
    return value


def test_a_slot_whose_worker_keeps_dying_fails_for_good_and_says_why(study, tmp_path, monkeypatch):
    monkeypatch.setenv(LEASE_ENV, "0")  # each attempt's worker is dead by the time the next one asks
    attempts = []
    for _ in range(MAX_ATTEMPTS):
        dying = worker(tmp_path)
        attempts.append(dying.claim_trial(study, budget=1))
        dying.close()  # its heartbeat stops, as a killed worker's does
    assert [t.number for t in attempts] == list(range(MAX_ATTEMPTS))  # the first, then its retries
    assert worker(tmp_path).claim_trial(study, budget=1) is None  # the last death spends the slot
    last = study.get_trials()[-1]
    assert last.state == TrialState.FAIL and not last.system_attrs.get(ABANDONED_KEY)  # counted: the budget is met
    assert f"killed {MAX_ATTEMPTS} times" in last.system_attrs[FAILED_BECAUSE_KEY]
    assert last.system_attrs[RETRY_HISTORY_KEY] == list(range(MAX_ATTEMPTS - 1)) and last.system_attrs[RETRY_OF_KEY] == 0
    assert TrialState.WAITING not in [t.state for t in study.get_trials()]  # no retry queued after it
    assert spent_trials(study) == 1


def test_a_seed_whose_worker_keeps_dying_fails_for_good(study, tmp_path, monkeypatch):
    accept_all = lambda record: True  # noqa: E731
    monkeypatch.setenv(LEASE_ENV, "0")
    for attempt in range(MAX_ATTEMPTS):
        dying = worker(tmp_path)
        assert dying.claim_seed(study, [0], accept_all)[0] == 0
        dying.close()  # its heartbeat stops, as a killed worker's does
    monkeypatch.setenv(LEASE_ENV, "60")
    survivor = worker(tmp_path)
    assert survivor.claim_seed(study, [0], accept_all)[0] is None
    claim = study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}0"]
    assert claim["state"] == "failed" and f"killed {MAX_ATTEMPTS} times" in claim["reason"]
    assert set(survivor.settled_seeds(study, [0], accept_all)) == {0}  # settled for this sweep: the pair ends
    assert worker(tmp_path).settled_seeds(study, [0], accept_all) == {}  # a later command tries it once more


def test_a_worker_asking_for_another_definition_is_refused_while_others_run_the_sweep(study, tmp_path):
    sweep = {"task": "t", "method": "m", "trials": 3, "seeds": 2, "epochs": 1, "fixed": {"batch_size": 64}}
    running, same, other = worker(tmp_path), worker(tmp_path), worker(tmp_path)
    running.join(study, sweep)
    same.join(study, sweep)
    with pytest.raises(HarnessError, match=r"being run by 2 worker\(s\).* 3 trials, 2 seeds.*asks for 6 trials"):
        other.join(study, sweep | {"trials": 6})
    running.close()
    same.close()
    other.join(study, sweep | {"trials": 6})  # nobody runs it now: a later command may raise the budget
    stored = study._storage.get_study_system_attrs(study._study_id)[DEFINITION_KEY]
    assert stored["definition"]["trials"] == 6 and list(stored["members"]) == [other.holder.id]
    # A member that died on this machine does not hold the definition.
    stored["members"] = {f"{socket.gethostname()}:999999:x": {"owner": f"{socket.gethostname()}:999999:x",
                                                             "expires": 4e9}}
    study._storage.set_study_system_attr(study._study_id, DEFINITION_KEY, stored)
    worker(tmp_path).join(study, sweep)
