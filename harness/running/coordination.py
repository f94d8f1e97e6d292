"""The shared storage as the only coordinator between workers.

Workers never talk to each other. Every decision that two workers could take at
once (start another trial, train a seed, create the MLflow parent run) is taken
inside one storage-wide mutex and written to the Optuna storage itself, so any
number of processes, on one machine or many, hold one trial budget and train
each seed once. Whoever holds a trial or a seed renews a lease on it; a worker
that sees a lease run out (its holder was killed) gives the trial or seed back,
and another worker, or the next run, takes it up.

A fault must not change the answer. Every trial fills a slot of the budget, and its slot, not Optuna's
trial number, seeds its sampler and its training: in a run where no worker dies the two are equal, and
the retry of a trial whose worker died fills the same slot (with its parameters, and Optuna's
`failed_trial` / `retry_history` attributes linking it to the attempts before it), so it trains exactly
what the lost attempt would have. A slot whose worker died MAX_ATTEMPTS times is failed for good, with
the reason, rather than retried forever (a setting that gets its worker killed for memory).

A study also holds the sweep's definition (trials, seeds, epochs, fixed values) and the workers running
it; a worker asking for another definition while others run it is refused (`join`).

The mutex is an flock on a file beside a local store (a journal file or a sqlite
database) and a PostgreSQL advisory lock for a PostgreSQL storage: both are
released by the operating system or the server when their holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from harness.api.errors import HarnessError
from harness.results.identity import plain

log = logging.getLogger(__name__)

LEASE_ENV = "HARNESS_LEASE_S"
DEFAULT_LEASE_S = 60.0
POLL_S = 1.0
LEASE_KEY = "harness:lease"
ABANDONED_KEY = "harness:abandoned"
SEED_PREFIX = "harness:seed:"
SLOT_KEY = "harness:slot"  # the budget slot a trial fills: its number in a run where no worker died
CLAIM_KEY = "harness:claim"  # a trial's claim id, which its MLflow run is tagged with
DEATHS_KEY = "harness:deaths"  # how many attempts at a slot lost their worker
FAILED_BECAUSE_KEY = "harness:failed_because"  # why a slot or seed failed for good
RETRY_OF_KEY = "failed_trial"  # Optuna's names (RetryFailedTrialCallback): the first attempt's number,
RETRY_HISTORY_KEY = "retry_history"  # and every earlier attempt's
DEFINITION_KEY = "harness:definition"
MAX_ATTEMPTS = 3  # a trial or seed whose worker died this many times is not tried again
WAIT = "wait"  # claim_trial's answer while other workers hold every remaining trial


def lease_seconds() -> float:
    """How long a silent worker keeps its trial or seed; a test shortens it to see a kill recovered fast."""
    return float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S))


# -- the storage-wide mutex ----------------------------------------------------------------------

class FileMutex:
    """flock on a file: one holder among all processes on this machine; freed when the holder dies."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._threads = threading.Lock()  # flock is per open file, so threads of one process queue here

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._threads, open(self.path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class PostgresMutex:
    """A session-level advisory lock: the server frees it when the holder's connection drops."""

    KEY = zlib.crc32(b"harness-coordination")

    def __init__(self, url: str):
        self.conninfo = _libpq_url(url)
        self._threads = threading.Lock()
        self._connection = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._threads:
            connection = self._connect()
            connection.execute("SELECT pg_advisory_lock(%s)", (self.KEY,))
            try:
                yield
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (self.KEY,))

    def _connect(self):
        import psycopg

        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(self.conninfo, autocommit=True)
            except psycopg.Error as exc:
                reason = " ".join(str(exc).split())  # psycopg's message spans lines; the CLI prints one
                raise HarnessError(f"--storage postgresql://{_host_of(self.conninfo)}: cannot open the database "
                                   f"({reason}); start its server, or fix the URL") from None
        return self._connection


def _libpq_url(url: str) -> str:
    """SQLAlchemy's postgresql+driver://… as the plain URL libpq reads."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def mutex_for(storage_spec: str | None, workdir: Path) -> FileMutex | PostgresMutex:
    """The mutex every worker sharing this storage agrees on, whatever its current directory."""
    # Not "<journal>.lock": Optuna's journal backend takes that name for its own lock.
    if storage_spec is None:
        return FileMutex((Path(workdir) / "optuna.journal.workers.lock").resolve())
    if storage_spec.startswith("postgresql"):
        return PostgresMutex(storage_spec)
    if storage_spec.startswith("sqlite:///"):
        return FileMutex(Path(storage_spec.removeprefix("sqlite:///") + ".workers.lock").resolve())
    if "://" not in storage_spec:
        return FileMutex(Path(storage_spec + ".workers.lock").resolve())
    raise HarnessError(f"--storage {storage_spec}: workers coordinate through a journal file, sqlite or "
                       "postgresql storage; give one of those")


# -- who holds what --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    """A worker: unique across machines, and checkable for life on its own machine."""

    host: str
    pid: int
    token: str

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])

    @property
    def id(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"


def _lease(holder: Holder) -> dict[str, Any]:
    now = time.time()
    return {"owner": holder.id, "expires": now + lease_seconds(), "renewed": now}


def lease_expired(lease: dict[str, Any] | None) -> bool:
    """No lease, a lease past its time, or one whose holder is a dead process on this machine."""
    if not lease:
        return True
    if lease["expires"] < time.time():
        return True
    host, pid, _ = lease["owner"].rsplit(":", 2)
    return host == socket.gethostname() and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the coordinator ------------------------------------------------------------------------------

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
            trials = study.get_trials(deepcopy=False)
            self._give_back_stale_trials(study, trials)
            trials = study.get_trials(deepcopy=False)
            spent = sum(1 for t in trials if counts_against_budget(t))
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if spent + running >= budget:
                return WAIT if running else None
            # study.ask() takes the oldest waiting trial (a retry) before it samples a new one.
            waiting = [t for t in trials if t.state == TrialState.WAITING]
            slot = slot_of(waiting[0]) if waiting else 1 + max((slot_of(t) for t in trials), default=-1)
            if sampler_for is not None:
                study.sampler = sampler_for(slot)
            trial = study.ask()
            slot = study._storage.get_trial_system_attrs(trial._trial_id).get(SLOT_KEY, slot)
            claim = uuid.uuid4().hex
            for key, value in ((SLOT_KEY, slot), (CLAIM_KEY, claim), (LEASE_KEY, _lease(self.holder))):
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
        try:
            study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except (UpdateFinishedTrialError, RuntimeError, ValueError) as exc:
            # Our lease ran out and another worker gave the trial back; its replacement counts instead.
            log.warning("trial %d was given back while it ran (%s); its result is dropped", trial.number, exc)

    def abandon_trial(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Give a trial back at once (this worker is being interrupted): it is retried, not counted."""
        with self._guard:
            self._held_trials.pop(trial._trial_id, None)
        with self.mutex.hold():
            self._give_back(study, study._storage.get_trial(trial._trial_id), died=False)

    def _give_back_stale_trials(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        for trial in trials:
            if trial.state == TrialState.RUNNING and lease_expired(trial.system_attrs.get(LEASE_KEY)):
                log.warning("%s: trial %d (slot %d) lost its worker", study.study_name, trial.number,
                            slot_of(trial))
                self._give_back(study, trial, died=True)

    def _give_back(self, study: optuna.Study, trial: FrozenTrial, died: bool) -> None:
        """Mark the attempt failed and not counted, and queue its retry in the same slot with the same
        parameters; after MAX_ATTEMPTS deaths, fail the slot for good (it counts) and say why."""
        if trial.state != TrialState.RUNNING:
            return
        storage, attrs = study._storage, trial.system_attrs
        deaths = attrs.get(DEATHS_KEY, 0) + died
        history = [*attrs.get(RETRY_HISTORY_KEY, []), trial.number]
        if claim := attrs.get(CLAIM_KEY):
            with self._guard:
                self._lost_trial_claims.append(claim)
        if deaths >= MAX_ATTEMPTS:
            reason = (f"its worker died {deaths} times running these parameters (trials "
                      f"{', '.join(map(str, history))}), so it is not retried again; a worker killed for "
                      f"memory is the usual cause")
            log.error("%s: slot %d failed: %s", study.study_name, slot_of(trial), reason)
            storage.set_trial_system_attr(trial._trial_id, FAILED_BECAUSE_KEY, reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            return
        storage.set_trial_system_attr(trial._trial_id, ABANDONED_KEY, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={
            "fixed_params": attrs.get("fixed_params", trial.params),
            RETRY_OF_KEY: attrs.get(RETRY_OF_KEY, trial.number), RETRY_HISTORY_KEY: history,
            SLOT_KEY: slot_of(trial), DEATHS_KEY: deaths}))
        log.warning("%s: slot %d is retried with the parameters of trial %d", study.study_name, slot_of(trial),
                    trial.number)

    # seeds

    def settled_seeds(self, study: optuna.Study, seeds: list[int],
                      accepts: Callable[[dict[str, Any]], bool]) -> dict[int, dict[str, Any]]:
        """Seeds some worker settled that still stand: seed -> its claim, whose "record" is the record
        to write wherever it is missing. `accepts` is the caller's judgement of a recorded seed."""
        claims = study._storage.get_study_system_attrs(study._study_id)
        return {seed: claim for seed in seeds
                if self._stands(claim := claims.get(f"{SEED_PREFIX}{seed}"), accepts)}

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
                claim = claims.get(f"{SEED_PREFIX}{seed}")
                if self._stands(claim, accepts):
                    continue
                if claim and claim["state"] == "running" and not lease_expired(claim["lease"]):
                    continue
                lost = [claim["claim_id"]] if claim and claim["state"] == "running" else []
                deaths = claim.get("deaths", 0) + (claim["lease"] is not None) if lost else 0  # None: handed back
                if deaths >= MAX_ATTEMPTS:
                    reason = (f"its worker died {deaths} times training it, so it is not tried again in this "
                              f"sweep; a worker killed for memory is the usual cause")
                    log.error("%s: seed %d failed: %s", study.study_name, seed, reason)
                    study._storage.set_study_system_attr(study._study_id, f"{SEED_PREFIX}{seed}", claim | {
                        "state": "failed", "reason": reason, "record": None, "finished_at": time.time()})
                    ended += lost
                    continue
                if lost:
                    log.warning("%s: seed %d lost its worker; training it again", study.study_name, seed)
                study._storage.set_study_system_attr(study._study_id, f"{SEED_PREFIX}{seed}", {
                    "state": "running", "lease": _lease(self.holder), "claim_id": uuid.uuid4().hex,
                    "finished_at": 0.0, "deaths": deaths,
                })
                lost += ended
                with self._guard:
                    self._held_seeds[(study._study_id, seed)] = study
                self._ensure_heartbeat()
                return seed, lost
        return None, ended

    def seed_claim_id(self, study: optuna.Study, seed: int) -> str:
        return study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}{seed}"]["claim_id"]

    def holds_seed(self, study: optuna.Study, seed: int, claim_id: str) -> bool:
        """Whether this worker's claim on the seed still stands (no other worker took it over)."""
        claim = study._storage.get_study_system_attrs(study._study_id).get(f"{SEED_PREFIX}{seed}", {})
        return claim.get("claim_id") == claim_id and claim.get("state") == "running"

    def finish_seed(self, study: optuna.Study, seed: int, claim_id: str, record: dict[str, Any] | None,
                    curve: list[dict[str, float]] | None = None) -> bool:
        """Settle a held seed: its record and per-epoch curve, or None when it diverged. False when the
        claim was lost meanwhile; then the caller writes nothing, since the seed is another worker's now."""
        with self._guard:
            self._held_seeds.pop((study._study_id, seed), None)
        with self.mutex.hold():
            key = f"{SEED_PREFIX}{seed}"
            claim = study._storage.get_study_system_attrs(study._study_id).get(key, {})
            if claim.get("claim_id") != claim_id:
                # Our lease ran out (a stalled machine) and another worker took the seed over: its result stands.
                log.warning("%s: seed %d was taken over while it ran; this worker writes nothing for it",
                            study.study_name, seed)
                return False
            study._storage.set_study_system_attr(study._study_id, key, claim | {
                "state": "ok" if record is not None else "diverged", "record": record, "curve": curve,
                "finished_at": time.time(),
            })
            return True

    def release_seed(self, study: optuna.Study, seed: int) -> None:
        """Give a held seed back unfinished (this worker is being interrupted)."""
        with self._guard:
            self._held_seeds.pop((study._study_id, seed), None)
        with self.mutex.hold():
            study._storage.set_study_system_attr(study._study_id, f"{SEED_PREFIX}{seed}", {
                **study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}{seed}"],
                "lease": None})

    # the sweep's definition

    def join(self, study: optuna.Study, definition: dict[str, Any]) -> None:
        """Work on this study under `definition` (trials, seeds, epochs, fixed values). Refused in one line
        while live workers run it under another one; a study nobody runs takes the new definition, so a
        later command may still raise the budget or the seeds, as one process always could."""
        definition = plain(definition)
        with self.mutex.hold():
            current = study._storage.get_study_system_attrs(study._study_id).get(DEFINITION_KEY) or {}
            members = {who: lease for who, lease in (current.get("members") or {}).items()
                       if who != self.holder.id and not lease_expired(lease)}
            if members and current.get("definition") != definition:
                raise HarnessError(_refusal(study.study_name, current["definition"], definition, members))
            members[self.holder.id] = _lease(self.holder)
            study._storage.set_study_system_attr(study._study_id, DEFINITION_KEY,
                                                 {"definition": definition, "members": members})
        with self._guard:
            self._joined[study._study_id] = study
        self._ensure_heartbeat()

    def leave(self, study: optuna.Study) -> None:
        with self._guard:
            if self._joined.pop(study._study_id, None) is None:
                return
        with self.mutex.hold():
            current = study._storage.get_study_system_attrs(study._study_id).get(DEFINITION_KEY)
            if current and self.holder.id in current.get("members", {}):
                members = {k: v for k, v in current["members"].items() if k != self.holder.id}
                study._storage.set_study_system_attr(study._study_id, DEFINITION_KEY, current | {"members": members})

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
                study._storage.set_trial_system_attr(trial_id, LEASE_KEY, _lease(self.holder))
        for study in joined.values():
            with self.mutex.hold():
                current = study._storage.get_study_system_attrs(study._study_id).get(DEFINITION_KEY)
                if current and self.holder.id in current.get("members", {}):
                    members = current["members"] | {self.holder.id: _lease(self.holder)}
                    study._storage.set_study_system_attr(study._study_id, DEFINITION_KEY,
                                                         current | {"members": members})
        for (_, seed), study in seeds.items():
            with self.mutex.hold():
                key = f"{SEED_PREFIX}{seed}"
                claim = study._storage.get_study_system_attrs(study._study_id).get(key)
                if claim and claim["state"] == "running" and claim["lease"] and \
                        claim["lease"]["owner"] == self.holder.id:
                    study._storage.set_study_system_attr(study._study_id, key, claim | {"lease": _lease(self.holder)})

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


def slot_of(trial: FrozenTrial) -> int:
    """The budget slot a trial fills; a trial made before slots were stored fills its own number."""
    return trial.system_attrs.get(SLOT_KEY, trial.number)


def _refusal(study: str, running: dict[str, Any], asked: dict[str, Any], members: dict[str, Any]) -> str:
    def says(definition: dict[str, Any]) -> str:
        fixed = ", ".join(f"{k}={v}" for k, v in sorted((definition.get("fixed") or {}).items()))
        return (f"{definition.get('trials')} trials, {definition.get('seeds')} seeds, {definition.get('epochs')} "
                f"epochs" + (f", fixed {fixed}" if fixed else ""))

    who = ", ".join(sorted(":".join(m.split(":")[:2]) for m in members))
    return (f"study {study} is being run by {len(members)} worker(s) ({who}) with {says(running)}; this command "
            f"asks for {says(asked)}: join it with the same --trials, --seeds, --epochs and --set, or run yours "
            f"once it is done")


def counts_against_budget(trial: FrozenTrial) -> bool:
    """Finished, pruned or failed trials count; one given back after its worker died does not."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and not trial.system_attrs.get(ABANDONED_KEY, False)


def settled_records(storage: optuna.storages.BaseStorage) -> Iterator[dict[str, Any]]:
    """Every record a worker settled in this storage's studies (the newest of each seed's claim)."""
    for study in storage.get_all_studies():
        for key, claim in storage.get_study_system_attrs(study._study_id).items():
            if key.startswith(SEED_PREFIX) and claim.get("state") == "ok" and claim.get("record"):
                yield claim["record"]


def _host_of(conninfo: str) -> str:
    """host:port/database of a PostgreSQL URL, without the user and password."""
    return conninfo.split("://", 1)[-1].rpartition("@")[2]
