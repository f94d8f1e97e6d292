"""The trial budget's slots, as the trials in the storage record them.

Every trial fills a slot of the budget, and its slot, not Optuna's trial number, seeds its sampler and its
training: in a run where no worker dies the two are equal, and the retry of a trial whose run was killed
fills the same slot, so it trains exactly what the lost attempt would have (harness.running.coordination
.retries).
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

SLOT_KEY = "harness:slot"  # the budget slot a trial fills: its number in a run where no worker died
CLAIM_KEY = "harness:claim"  # a trial's claim id, which its MLflow run is tagged with
ABANDONED_KEY = "harness:abandoned"  # an attempt given back: failed, and not counted against the budget
WAIT = "wait"  # Coordinator.claim_trial's answer while other workers hold every remaining trial


def slot_of(trial: FrozenTrial) -> int:
    """The budget slot a trial fills; a trial made before slots were stored fills its own number."""
    return trial.system_attrs.get(SLOT_KEY, trial.number)


def counts_against_budget(trial: FrozenTrial) -> bool:
    """Finished, pruned or failed trials count; one given back (its run was killed or interrupted) does not."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.system_attrs.get(ABANDONED_KEY, False)


def next_slot(trials: list[FrozenTrial]) -> int:
    """The slot a new trial (not a retry) fills: the one after every slot taken so far."""
    return 1 + max((slot_of(t) for t in trials), default=-1)
