"""The shared storage as the only coordinator between workers.

Workers never talk to each other. Every decision that two workers could take at
once (start another trial, train a seed, create the MLflow parent run) is taken
inside one storage-wide mutex and written to the Optuna storage itself, so any
number of processes, on one machine or many, hold one trial budget and train
each seed once. Whoever holds a trial or a seed renews a lease on it; a worker
that sees a lease run out (its holder was killed) gives the trial or seed back,
and another worker, or the next run, takes it up.

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

log = logging.getLogger(__name__)

LEASE_ENV = "HARNESS_LEASE_S"
DEFAULT_LEASE_S = 60.0
POLL_S = 1.0
LEASE_KEY = "harness:lease"
ABANDONED_KEY = "harness:abandoned"
SEED_PREFIX = "harness:seed:"
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
    return {"owner": holder.id, "expires": time.time() + lease_seconds()}


def _expired(lease: dict[str, Any] | None) -> bool:
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
        self._held_trials: dict[int, optuna.Study] = {}
        self._held_seeds: dict[tuple[int, int], optuna.Study] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # trials

    def claim_trial(self, study: optuna.Study, budget: int,
                    sampler_for: Callable[[int], optuna.samplers.BaseSampler] | None = None
                    ) -> optuna.Trial | str | None:
        """A new trial while finished plus running trials stay under the budget; WAIT while others
        hold the rest; None once the budget is spent. `sampler_for(number)` samples the new trial."""
        with self.mutex.hold():
            trials = study.get_trials(deepcopy=False)
            self._give_back_stale_trials(study, trials)
            trials = study.get_trials(deepcopy=False)
            spent = sum(1 for t in trials if counts_against_budget(t))
            running = sum(1 for t in trials if t.state == TrialState.RUNNING)
            if spent + running >= budget:
                return WAIT if running else None
            if sampler_for is not None:
                study.sampler = sampler_for(len(trials))
            trial = study.ask()
            study._storage.set_trial_system_attr(trial._trial_id, LEASE_KEY, _lease(self.holder))
        with self._guard:
            self._held_trials[trial._trial_id] = study
        self._ensure_heartbeat()
        return trial

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
            self._give_back(study, study._storage.get_trial(trial._trial_id))

    def _give_back_stale_trials(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        for trial in trials:
            if trial.state == TrialState.RUNNING and _expired(trial.system_attrs.get(LEASE_KEY)):
                log.warning("%s: trial %d lost its worker; it is retried with the same parameters",
                            study.study_name, trial.number)
                self._give_back(study, trial)

    @staticmethod
    def _give_back(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.RUNNING:
            return
        storage = study._storage
        storage.set_trial_system_attr(trial._trial_id, ABANDONED_KEY, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.system_attrs.get("fixed_params", trial.params), skip_if_exists=False)

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
        # A seed that diverged before this sweep is tried again, as a rerun of one process always did.
        fresh = claim["finished_at"] >= self.started
        return fresh or (claim["state"] == "ok" and not self.force)

    def claim_seed(self, study: optuna.Study, seeds: list[int],
                   accepts: Callable[[dict[str, Any]], bool]) -> tuple[int | None, list[str]]:
        """The first of `seeds` nobody holds, now held by this worker, or None while others hold them all;
        with it, the ids of the claims it replaced (so their unfinished MLflow runs can be removed)."""
        with self.mutex.hold():
            claims = study._storage.get_study_system_attrs(study._study_id)
            for seed in seeds:
                claim = claims.get(f"{SEED_PREFIX}{seed}")
                if self._stands(claim, accepts):
                    continue
                if claim and claim["state"] == "running" and not _expired(claim["lease"]):
                    continue
                lost = [claim["claim_id"]] if claim and claim["state"] == "running" else []
                if lost:
                    log.warning("%s: seed %d lost its worker; training it again", study.study_name, seed)
                study._storage.set_study_system_attr(study._study_id, f"{SEED_PREFIX}{seed}", {
                    "state": "running", "lease": _lease(self.holder), "claim_id": uuid.uuid4().hex,
                    "finished_at": 0.0,
                })
                with self._guard:
                    self._held_seeds[(study._study_id, seed)] = study
                self._ensure_heartbeat()
                return seed, lost
        return None, []

    def seed_claim_id(self, study: optuna.Study, seed: int) -> str:
        return study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}{seed}"]["claim_id"]

    def finish_seed(self, study: optuna.Study, seed: int, claim_id: str, record: dict[str, Any] | None) -> None:
        """Settle a held seed: its record, or None when it diverged."""
        with self._guard:
            self._held_seeds.pop((study._study_id, seed), None)
        with self.mutex.hold():
            key = f"{SEED_PREFIX}{seed}"
            claim = study._storage.get_study_system_attrs(study._study_id).get(key, {})
            if claim.get("claim_id") != claim_id:
                # Our lease ran out (a stalled machine) and another worker took the seed over: its result stands.
                log.warning("%s: seed %d was taken over while it ran; this result is not shared",
                            study.study_name, seed)
                return
            study._storage.set_study_system_attr(study._study_id, key, claim | {
                "state": "ok" if record is not None else "diverged", "record": record, "finished_at": time.time(),
            })

    def release_seed(self, study: optuna.Study, seed: int) -> None:
        """Give a held seed back unfinished (this worker is being interrupted)."""
        with self._guard:
            self._held_seeds.pop((study._study_id, seed), None)
        with self.mutex.hold():
            study._storage.set_study_system_attr(study._study_id, f"{SEED_PREFIX}{seed}", {
                **study._storage.get_study_system_attrs(study._study_id)[f"{SEED_PREFIX}{seed}"],
                "lease": None})

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
            trials, seeds = dict(self._held_trials), dict(self._held_seeds)
        for trial_id, study in trials.items():
            with contextlib.suppress(UpdateFinishedTrialError):
                study._storage.set_trial_system_attr(trial_id, LEASE_KEY, _lease(self.holder))
        for (_, seed), study in seeds.items():
            with self.mutex.hold():
                key = f"{SEED_PREFIX}{seed}"
                claim = study._storage.get_study_system_attrs(study._study_id).get(key)
                if claim and claim["state"] == "running" and claim["lease"] and \
                        claim["lease"]["owner"] == self.holder.id:
                    study._storage.set_study_system_attr(study._study_id, key, claim | {"lease": _lease(self.holder)})

    def close(self) -> None:
        self._stop.set()


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
