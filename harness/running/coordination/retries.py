"""Giving a trial back: one decision written first, which whoever finds it unfinished completes.

Optuna's storages make each write atomic, but a give-back is several (mark the attempt given back, fail
it, queue its retry in the same slot), and a process may be killed between any two. So the decision is
written first, as one attribute of the attempt (`GIVE_BACK_KEY`: its death count, and the reason when the
slot fails for good); every later write is idempotent, and any worker that finds a running attempt with a
decision (under the mutex, so its writer is gone) completes it. A slot's retry is derived from that
decision alone, so no interleaving of kills loses a slot or counts a death twice.

A death is one lost process: a worker whose lease ran out, or a data-parallel run that lost a rank (the
whole rank group is one death). A preemption (the process was told to stop, and gave its work back) or an
interruption is not one. A slot killed MAX_ATTEMPTS times fails for good, with the reason, rather than
being retried forever.
"""

from __future__ import annotations

import logging
import os
import signal

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.running.coordination.slots import ABANDONED_KEY, CLAIM_KEY, SLOT_KEY, slot_of

log = logging.getLogger(__name__)

GIVE_BACK_KEY = "harness:give_back"  # the give-back's decision: {"deaths": n, "failed_because": reason | None}
DEATHS_KEY = "harness:deaths"  # how many attempts at a slot (or a seed) lost their process
FAILED_BECAUSE_KEY = "harness:failed_because"  # why a slot or seed failed for good
RETRY_OF_KEY = "failed_trial"  # Optuna's names (RetryFailedTrialCallback): the first attempt's number,
RETRY_HISTORY_KEY = "retry_history"  # and every earlier attempt's
MAX_ATTEMPTS = 3  # a trial or seed killed this many times is not tried again
# Tests only: the process kills itself (SIGKILL) just before this write of a give-back, to show that a later
# process completes it ("decision", "retry", "abandoned" or "failed").
STOP_ENV = "HARNESS_TEST_KILL_BEFORE"


def killed_reason(deaths: int, what: str) -> str:
    return (f"killed {deaths} times {what}, so it is not tried again in this sweep (a process killed for "
            f"memory, a lost machine or a lost data-parallel rank)")


def give_back(study: optuna.Study, trial: FrozenTrial, died: bool) -> str | None:
    """Decide a running attempt's give-back (one write), then complete it; the attempt's claim id, whose
    MLflow run is to end KILLED, or None when the attempt was no longer running."""
    if trial.state != TrialState.RUNNING:
        return None
    if GIVE_BACK_KEY not in trial.system_attrs:
        deaths = trial.system_attrs.get(DEATHS_KEY, 0) + died
        history = [*trial.system_attrs.get(RETRY_HISTORY_KEY, []), trial.number]
        reason = (killed_reason(deaths, f"running these parameters (trials {', '.join(map(str, history))})")
                  if deaths >= MAX_ATTEMPTS else None)
        _stop_before("decision")
        study._storage.set_trial_system_attr(trial._trial_id, GIVE_BACK_KEY,
                                             {"deaths": deaths, "failed_because": reason})
    return complete(study, study._storage.get_trial(trial._trial_id))


def complete(study: optuna.Study, trial: FrozenTrial) -> str | None:
    """Carry out the decided give-back of `trial` from wherever its writer stopped; each step is done once."""
    if trial.state != TrialState.RUNNING or GIVE_BACK_KEY not in trial.system_attrs:
        return None
    storage, attrs = study._storage, trial.system_attrs
    decision = attrs[GIVE_BACK_KEY]
    if decision["failed_because"] is not None:
        log.error("%s: slot %d failed: %s", study.study_name, slot_of(trial), decision["failed_because"])
        _stop_before("failed_because")
        storage.set_trial_system_attr(trial._trial_id, FAILED_BECAUSE_KEY, decision["failed_because"])
    else:
        if not any(t.system_attrs.get(RETRY_HISTORY_KEY, [None])[-1] == trial.number
                   for t in study.get_trials(deepcopy=False)):
            _stop_before("retry")
            study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={
                "fixed_params": attrs.get("fixed_params", trial.params),
                RETRY_OF_KEY: attrs.get(RETRY_OF_KEY, trial.number),
                RETRY_HISTORY_KEY: [*attrs.get(RETRY_HISTORY_KEY, []), trial.number],
                SLOT_KEY: slot_of(trial), DEATHS_KEY: decision["deaths"]}))
            log.warning("%s: slot %d is retried with the parameters of trial %d", study.study_name,
                        slot_of(trial), trial.number)
        _stop_before("abandoned")
        storage.set_trial_system_attr(trial._trial_id, ABANDONED_KEY, True)
    _stop_before("failed")
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # last: a failed attempt is a finished one
    return attrs.get(CLAIM_KEY)


def given_back(trial: FrozenTrial) -> bool:
    """Whether some worker decided to give this attempt back (finished or not): its result is dropped."""
    return GIVE_BACK_KEY in trial.system_attrs or trial.system_attrs.get(ABANDONED_KEY, False)


def _stop_before(step: str) -> None:
    if os.environ.get(STOP_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
