"""Where a sweep stands, read from its shared storage alone: what `harness status` prints.

Every fact is one the workers already write for their own coordination (harness.running.coordination):
trial states and leases, seed claims, the sweep's definition and its members. Reading takes no lock and
changes nothing, so it is safe beside running workers, on any storage they use; what it reads is a snapshot,
in which a give-back under way is counted as it will end.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.running.coordination import (ABANDONED_KEY, DEFINITION_KEY, GIVE_BACK_KEY, LEASE_KEY, SEED_PREFIX,
                                          counts_against_budget, lease_expired, lease_seconds, slot_of)


@dataclass
class Holding:
    """A trial or seed some worker holds: what, by which host and process, and how long since it renewed."""

    what: str
    host: str
    pid: int
    age_s: float
    gone: bool  # its lease ran out, or its process died on this machine: the next worker takes it over

    def describe(self) -> str:
        where = "here" if self.host == socket.gethostname() else self.host
        state = "; its worker is gone, the next worker to ask takes it over" if self.gone else ""
        return f"{self.what} by {where} pid {self.pid}, renewed {self.age_s:.0f} s ago{state}"


@dataclass
class SweepState:
    study: str
    definition: dict[str, Any] | None  # None: the study predates stored definitions
    members: int = 0  # workers that joined it and are alive
    done: int = 0  # trials completed or pruned
    running: int = 0
    failed: int = 0  # failed trials the budget counts (diverged, or a slot whose worker kept dying)
    retried: int = 0  # attempts given back after their worker died (their slot was run again)
    waiting: int = 0  # retries queued for a worker
    seeds_ok: list[int] = field(default_factory=list)
    seeds_running: list[int] = field(default_factory=list)
    seeds_failed: dict[int, str] = field(default_factory=dict)  # seed -> why (diverged, or its worker kept dying)
    held: list[Holding] = field(default_factory=list)

    @property
    def pair(self) -> tuple[str, str]:
        if self.definition:
            return self.definition["task"], self.definition["method"]
        task, method = self.study.split("/")[:2]
        return task.split("@")[0], method.split("@")[0]

    @property
    def trials_left(self) -> int | None:
        """Trials not yet started (a queued retry is one of them)."""
        if not self.definition:
            return None
        return max(0, self.definition["trials"] - self.done - self.failed - self.running)

    @property
    def seeds_left(self) -> int | None:
        if not self.definition:
            return None
        started = set(self.seeds_ok) | set(self.seeds_running) | set(self.seeds_failed)
        return len([s for s in range(self.definition["seeds"]) if s not in started])


def sweep_states(storage: optuna.storages.BaseStorage) -> list[SweepState]:
    return sorted((_state(storage, study) for study in storage.get_all_studies()), key=lambda s: s.study)


def _state(storage, summary) -> SweepState:
    attrs = storage.get_study_system_attrs(summary._study_id)
    definition = attrs.get(DEFINITION_KEY) or {}
    state = SweepState(summary.study_name, definition.get("definition"),
                       members=sum(not lease_expired(lease) for lease in (definition.get("members") or {}).values()))
    for trial in storage.get_all_trials(summary._study_id, deepcopy=False):
        decided = trial.system_attrs.get(GIVE_BACK_KEY)  # a give-back under way reads as it will end
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            state.done += 1
        elif decided and trial.state == TrialState.RUNNING:
            state.retried += decided["failed_because"] is None
            state.failed += decided["failed_because"] is not None
        elif trial.state == TrialState.RUNNING:
            state.running += 1
            if lease := trial.system_attrs.get(LEASE_KEY):
                state.held.append(_holding(f"trial {trial.number} (slot {slot_of(trial)})", lease))
        elif trial.state == TrialState.WAITING:
            state.waiting += 1
        elif trial.system_attrs.get(ABANDONED_KEY):
            state.retried += 1
        elif counts_against_budget(trial):
            state.failed += 1
    for key, claim in sorted(attrs.items()):
        if not key.startswith(SEED_PREFIX):
            continue
        seed = int(key.removeprefix(SEED_PREFIX))
        if claim["state"] == "ok":
            state.seeds_ok.append(seed)
        elif claim["state"] == "running":
            state.seeds_running.append(seed)
            if claim.get("lease"):
                state.held.append(_holding(f"seed {seed}", claim["lease"]))
        else:
            state.seeds_failed[seed] = claim.get("reason") or claim["state"]
    return state


def _holding(what: str, lease: dict[str, Any]) -> Holding:
    host, pid, _token = lease["owner"].rsplit(":", 2)
    renewed = lease.get("renewed", lease["expires"] - lease_seconds())  # leases written before "renewed" was
    return Holding(what, host, int(pid), max(0.0, time.time() - renewed), lease_expired(lease))
