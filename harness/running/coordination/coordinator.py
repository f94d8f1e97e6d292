"""The Coordinator: a worker's questions to the shared storage, each answered inside the storage-wide mutex:
may I run another trial, which seed is mine, which run is the parent, and giving a trial or seed back."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from harness.results.identity import plain
from harness.running.coordination import definition as sweep_definition
from harness.running.coordination import retries
from harness.running.coordination.leases import LEASE_KEY, Holder, lease_expired, lease_seconds, new_lease
from harness.running.coordination.mutex import FileMutex, PostgresMutex
from harness.running.coordination.seeds import deaths_so_far, seed_claim, seed_key
from harness.running.coordination.slots import CLAIM_KEY, SLOT_KEY, WAIT, counts_against_budget, next_slot, slot_of

log = logging.getLogger(__name__)


class Coordinator:
    """Answers a worker's questions: may I run another trial, which seed is mine, which run is the parent."""

    def __init__(self, mutex: FileMutex | PostgresMutex, *, force: bool = False):
        self.mutex = mutex
        self.holder = Holder.me()
        self.started = time.time()
        self.force = force  # seeds finished before this sweep started are trained again
        self._held_trials: dict[int, tuple[optuna.Study, int, str]] = {}  # trial id -> study, slot, claim id
        self._held_seeds: dict[tuple[int, int], optuna.Study] = {}
        self._joined: dict[int, optuna.Study] = {}  # studies this worker works on, as a member
        self._lost_trial_claims: list[str] = []  # claims of trials given back here, whose MLflow runs are ended
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # trials

    def claim_trial(self, study: optuna.Study, budget: int,
                    sampler_for: Callable[[int], optuna.samplers.BaseSampler] | None = None
                    ) -> optuna.Trial | str | None:
        """A new trial while finished plus running trials stay under the budget; WAIT while others
        hold the rest; None once the budget is spent. A retry waiting for a worker comes first.
        `sampler_for(slot)` samples the new trial; `trial_slot` and `trial_claim` say what it holds."""
        with self.mutex.hold():
            self._give_back_lost_trials(study, study.get_trials(deepcopy=False))
            trials = study.get_trials(deepcopy=False)
            spent = sum(1 for t in trials if counts_against_budget(t))
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if spent + running >= budget:
                return WAIT if running else None
            # study.ask() takes the oldest waiting trial (a retry) before it samples a new one.
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            slot = slot_of(waiting[0]) if waiting else next_slot(trials)
            if not waiting:
                # A new trial is made waiting with its slot, in one write, then taken like a retry: a process
                # killed before it wrote the slot would leave a running trial that fills its own number.
                study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={SLOT_KEY: slot}))
            if sampler_for is not None:
                study.sampler = sampler_for(slot)
            trial = study.ask()
            slot = study._storage.get_trial_system_attrs(trial._trial_id).get(SLOT_KEY, slot)
            claim = uuid.uuid4().hex
            for key, value in ((SLOT_KEY, slot), (CLAIM_KEY, claim), (LEASE_KEY, new_lease(self.holder))):
                study._storage.set_trial_system_attr(trial._trial_id, key, value)
        with self._guard:
            self._held_trials[trial._trial_id] = (study, slot, claim)
        self._ensure_heartbeat()
        return trial

    def trial_slot(self, trial: optuna.Trial) -> int:
        """The budget slot a held trial fills: what seeds its training (and sampled its parameters)."""
        return self._held_trials[trial._trial_id][1]

    def trial_claim(self, trial: optuna.Trial) -> str:
        return self._held_trials[trial._trial_id][2]

    def lost_trial_claims(self) -> list[str]:
        """The claims of trials this worker gave back since it last asked: their MLflow runs are to end KILLED."""
        with self._guard:
            lost, self._lost_trial_claims = self._lost_trial_claims, []
        return lost

    def finish_trial(self, study: optuna.Study, trial: optuna.Trial, value: float | None,
                     state: TrialState = TrialState.COMPLETE) -> None:
        with self._guard:
            self._held_trials.pop(trial._trial_id, None)
        with self.mutex.hold():  # never between another worker's decision to give it back and its completion
            if retries.given_back(study._storage.get_trial(trial._trial_id)):
                # Our lease ran out and another worker gave the trial back; its replacement counts instead.
                log.warning("trial %d was given back while it ran; its result is dropped", trial.number)
                return
            try:
                study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            except (UpdateFinishedTrialError, RuntimeError, ValueError) as exc:
                log.warning("trial %d was given back while it ran (%s); its result is dropped", trial.number, exc)

    def give_back_trial(self, study: optuna.Study, trial: optuna.Trial, *, preempted: bool) -> None:
        """Give a held trial back at once, to be retried in its slot, not counted. `preempted`: this process
        was told to stop (a signal, Ctrl+C), which is no death; otherwise the run lost a process (a
        data-parallel rank), one death towards MAX_ATTEMPTS."""
        with self._guard:
            self._held_trials.pop(trial._trial_id, None)
        with self.mutex.hold():
            self._give_back(study, study._storage.get_trial(trial._trial_id), died=not preempted)

    def abandon_trial(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """The old name of an interrupted worker's give-back (no death)."""
        self.give_back_trial(study, trial, preempted=True)

    def _give_back_lost_trials(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        """Complete every give-back a killed process left half done, and give back trials whose worker is gone."""
        for trial in trials:
            if trial.state != TrialState.RUNNING:
                continue
            if retries.GIVE_BACK_KEY in trial.system_attrs:
                log.warning("%s: completing the give-back of trial %d (slot %d)", study.study_name, trial.number,
                            slot_of(trial))
                self._note_lost(retries.complete(study, trial))
            elif lease_expired(trial.system_attrs.get(LEASE_KEY)):
                log.warning("%s: trial %d (slot %d) lost its worker", study.study_name, trial.number,
                            slot_of(trial))
                self._give_back(study, trial, died=True)

    def _give_back(self, study: optuna.Study, trial: FrozenTrial, died: bool) -> None:
        self._note_lost(retries.give_back(study, trial, died))

    def _note_lost(self, claim: str | None) -> None:
        if claim:
            with self._guard:
                self._lost_trial_claims.append(claim)

    # seeds

    def settled_seeds(self, study: optuna.Study, seeds: list[int],
                      accepts: Callable[[dict[str, Any]], bool]) -> dict[int, dict[str, Any]]:
        """Seeds some worker settled that still stand: seed -> its claim, whose "record" is the record
        to write wherever it is missing. `accepts` is the caller's judgement of a recorded seed."""
        claims = study._storage.get_study_system_attrs(study._study_id)
        return {seed: claim for seed in seeds
                if self._stands(claim := claims.get(seed_key(seed)), accepts)}

    def _stands(self, claim: dict[str, Any] | None, accepts: Callable[[dict[str, Any]], bool]) -> bool:
        if not claim or claim["state"] == "running":
            return False
        if claim["state"] == "ok" and not accepts(claim["record"]):
            return False
        # A seed that diverged (or failed) before this sweep is tried again, as a rerun of one process always did.
        fresh = claim["finished_at"] >= self.started
        return fresh or (claim["state"] == "ok" and not self.force)

    def claim_seed(self, study: optuna.Study, seeds: list[int],
                   accepts: Callable[[dict[str, Any]], bool]) -> tuple[int | None, list[str]]:
        """The first of `seeds` nobody holds, now held by this worker, or None while others hold them all;
        with it, the ids of the claims it replaced (so their unfinished MLflow runs can be removed)."""
        ended: list[str] = []  # claims of seeds failed for good just now: their runs are removed too
        with self.mutex.hold():
            claims = study._storage.get_study_system_attrs(study._study_id)
            for seed in seeds:
                claim = claims.get(seed_key(seed))
                if self._stands(claim, accepts):
                    continue
                if claim and claim["state"] == "running" and not lease_expired(claim["lease"]):
                    continue
                lost = [claim["claim_id"]] if claim and claim["state"] == "running" else []
                deaths = deaths_so_far(claim) if lost else 0
                if deaths >= retries.MAX_ATTEMPTS:
                    reason = retries.killed_reason(deaths, "training it")
                    log.error("%s: seed %d failed: %s", study.study_name, seed, reason)
                    study._storage.set_study_system_attr(study._study_id, seed_key(seed), claim | {
                        "state": "failed", "reason": reason, "record": None, "finished_at": time.time()})
                    ended += lost
                    continue
                if lost:
                    log.warning("%s: seed %d lost its worker; training it again", study.study_name, seed)
                study._storage.set_study_system_attr(study._study_id, seed_key(seed), {
                    "state": "running", "lease": new_lease(self.holder), "claim_id": uuid.uuid4().hex,
                    "finished_at": 0.0, "deaths": deaths,
                })
                lost += ended
                with self._guard:
                    self._held_seeds[(study._study_id, seed)] = study
                self._ensure_heartbeat()
                return seed, lost
        return None, ended

    def seed_claim_id(self, study: optuna.Study, seed: int) -> str:
        return seed_claim(study, seed)["claim_id"]

    def holds_seed(self, study: optuna.Study, seed: int, claim_id: str) -> bool:
        """Whether this worker's claim on the seed still stands (no other worker took it over)."""
        claim = seed_claim(study, seed) or {}
        return claim.get("claim_id") == claim_id and claim.get("state") == "running"

    def finish_seed(self, study: optuna.Study, seed: int, claim_id: str, record: dict[str, Any] | None,
                    curve: list[dict[str, float]] | None = None) -> bool:
        """Settle a held seed: its record and per-epoch curve, or None when it diverged. False when the
        claim was lost meanwhile; then the caller writes nothing, since the seed is another worker's now."""
        with self._guard:
            self._held_seeds.pop((study._study_id, seed), None)
        with self.mutex.hold():
            claim = seed_claim(study, seed) or {}
            if claim.get("claim_id") != claim_id:
                # Our lease ran out (a stalled machine) and another worker took the seed over: its result stands.
                log.warning("%s: seed %d was taken over while it ran; this worker writes nothing for it",
                            study.study_name, seed)
                return False
            study._storage.set_study_system_attr(study._study_id, seed_key(seed), claim | {
                "state": "ok" if record is not None else "diverged", "record": record, "curve": curve,
                "finished_at": time.time(),
            })
            return True

    def give_back_seed(self, study: optuna.Study, seed: int, *, preempted: bool) -> None:
        """Give a held seed back unfinished, in one write: its lease dropped, so the next worker takes it at
        once. `preempted` as for `give_back_trial`: no death; otherwise the run lost a process, one death."""
        with self._guard:
            self._held_seeds.pop((study._study_id, seed), None)
        with self.mutex.hold():
            claim = seed_claim(study, seed)
            if not claim or claim["state"] != "running" or (claim["lease"] or {}).get("owner") != self.holder.id:
                return  # taken over by another worker meanwhile (our lease ran out), or already given back
            study._storage.set_study_system_attr(study._study_id, seed_key(seed), claim | {
                "lease": None, "deaths": claim.get("deaths", 0) + (not preempted)})

    def release_seed(self, study: optuna.Study, seed: int) -> None:
        """The old name of an interrupted worker's give-back (no death)."""
        self.give_back_seed(study, seed, preempted=True)

    # the sweep's definition

    def join(self, study: optuna.Study, definition: dict[str, Any]) -> None:
        """Work on this study under `definition` (trials, seeds, epochs, fixed values). Refused in one line
        while live workers run it under another one; a study nobody runs takes the new definition, so a
        later command may still raise the budget or the seeds, as one process always could."""
        with self.mutex.hold():
            sweep_definition.join(study, self.holder, plain(definition))
        with self._guard:
            self._joined[study._study_id] = study
        self._ensure_heartbeat()

    def leave(self, study: optuna.Study) -> None:
        with self._guard:
            if self._joined.pop(study._study_id, None) is None:
                return
        with self.mutex.hold():
            sweep_definition.leave(study, self.holder)

    # values created once

    def shared_value(self, study: optuna.Study, key: str, create: Callable[[], str],
                     discard: Callable[[str], None]) -> str:
        """The value stored under `key`, created by whichever worker asks first (a compare-and-set:
        a worker that loses the race discards what it created)."""
        attrs = study._storage.get_study_system_attrs(study._study_id)
        if key in attrs:
            return attrs[key]
        mine = create()  # outside the mutex: creating may be slow (a remote MLflow server)
        with self.mutex.hold():
            current = study._storage.get_study_system_attrs(study._study_id).get(key)
            if current is None:
                study._storage.set_study_system_attr(study._study_id, key, mine)
                return mine
        discard(mine)
        return current

    # leases

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._renew_forever, name="harness-lease", daemon=True)
            self._heartbeat.start()

    def _renew_forever(self) -> None:
        while not self._stop.wait(lease_seconds() / 4):
            try:
                self.renew()
            except Exception as exc:  # a storage hiccup must not kill the heartbeat; the next beat retries
                log.warning("could not renew leases: %s", exc)

    def renew(self) -> None:
        with self._guard:
            trials, seeds, joined = dict(self._held_trials), dict(self._held_seeds), dict(self._joined)
        for trial_id, (study, _slot, _claim) in trials.items():
            with contextlib.suppress(UpdateFinishedTrialError):
                study._storage.set_trial_system_attr(trial_id, LEASE_KEY, new_lease(self.holder))
        for study in joined.values():
            with self.mutex.hold():
                sweep_definition.renew_membership(study, self.holder)
        for (_, seed), study in seeds.items():
            with self.mutex.hold():
                claim = seed_claim(study, seed)
                if claim and claim["state"] == "running" and claim["lease"] and \
                        claim["lease"]["owner"] == self.holder.id:
                    study._storage.set_study_system_attr(study._study_id, seed_key(seed),
                                                         claim | {"lease": new_lease(self.holder)})

    def close(self) -> None:
        """Stop renewing, and leave every study this worker joined, so a later command may redefine it."""
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=30)  # a renewal under way must not extend a lease after this returns
        for study in list(self._joined.values()):
            try:
                self.leave(study)
            except Exception as exc:  # a storage that went away: the membership lapses with its lease
                log.warning("could not leave %s: %s", study.study_name, exc)
