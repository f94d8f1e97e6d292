"""The shared storage as the only coordinator between workers.

Workers never talk to each other. Every decision that two workers could take at once (start another trial,
train a seed, create the MLflow parent run, give a trial back) is taken inside one storage-wide mutex
(`mutex`) and written to the Optuna storage itself, so any number of processes, on one machine or many, hold
one trial budget (`slots`) and train each seed once (`seeds`). Whoever holds a trial or a seed renews a lease
on it (`leases`); a worker that sees a lease run out (its holder was killed) gives the trial back
(`retries`, where a give-back survives being killed halfway) or takes the seed over, and another worker, or
the next run, takes it up. A study also holds the sweep's definition and its workers (`definition`). The
`Coordinator` (`coordinator`) answers a worker's questions with all of these.

A fault must not change the answer: the retry of a trial whose run was killed fills the same slot, with its
parameters, so it trains exactly what the lost attempt would have.
"""

from harness.running.coordination.coordinator import Coordinator
from harness.running.coordination.definition import DEFINITION_KEY
from harness.running.coordination.leases import (DEFAULT_LEASE_S, LEASE_ENV, LEASE_KEY, Holder, lease_expired,
                                                 lease_seconds)
from harness.running.coordination.mutex import FileMutex, PostgresMutex, mutex_for
from harness.running.coordination.retries import (DEATHS_KEY, FAILED_BECAUSE_KEY, GIVE_BACK_KEY, MAX_ATTEMPTS,
                                                  RETRY_HISTORY_KEY, RETRY_OF_KEY, STOP_ENV)
from harness.running.coordination.seeds import SEED_PREFIX, settled_records
from harness.running.coordination.slots import (ABANDONED_KEY, CLAIM_KEY, SLOT_KEY, WAIT, counts_against_budget,
                                                slot_of)

POLL_S = 1.0  # how often a worker with nothing to do asks again

__all__ = ["ABANDONED_KEY", "CLAIM_KEY", "DEATHS_KEY", "DEFAULT_LEASE_S", "DEFINITION_KEY", "FAILED_BECAUSE_KEY",
           "GIVE_BACK_KEY", "LEASE_ENV", "LEASE_KEY", "MAX_ATTEMPTS", "POLL_S", "RETRY_HISTORY_KEY", "RETRY_OF_KEY",
           "SEED_PREFIX", "SLOT_KEY", "STOP_ENV", "WAIT", "Coordinator", "FileMutex", "Holder", "PostgresMutex",
           "counts_against_budget", "lease_expired", "lease_seconds", "mutex_for", "settled_records", "slot_of"]
