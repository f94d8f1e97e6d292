"""A fault does not change the answer: a sweep whose worker is SIGKILLed mid-trial, then mid-seed, and rerun
publishes the records and history one uninterrupted process publishes, parameters and metrics; and a worker
that stalled past its lease writes nothing. Real processes, real stores: sqlite, and PostgreSQL with an
`mlflow server` (both started here on local ports)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from harness.cli.app import main
from harness.results.publishing.history import history_path
from harness.results.records import read_records
from harness.running.coordination import (ABANDONED_KEY, DEATHS_KEY, LEASE_ENV, RETRY_OF_KEY, SEED_PREFIX,
                                          SLOT_KEY, STOP_ENV)
from tests.fixtures import SLOW_CLIP_PAUSE_ENV
from tests.servers import mlflow_server, postgres_bindir, postgres_server

pytestmark = pytest.mark.system  # slow: .ci/run runs these after the default suite

ROOT = Path(__file__).resolve().parent.parent
# The smallest sweep that shows it: a trial before and after the killed one (so the sampler's seeding shows),
# two seeds (so a seed recorded before the kill must reach the history), two epochs (so the pruner decides).
SWEEP = ["--method", "slow-clip", "--task", "tiny-synthetic", "--trials", "3", "--seeds", "2", "--epochs", "2"]
COMPARED = ("seed", "hparams", "metrics", "protocol", "identity", "checks")  # not times, hosts or run ids


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> tuple[dict, dict]:
    """The reference: the sweep in one uninterrupted process (its records' compared fields, its history)."""
    where = tmp_path_factory.mktemp("one-process")
    assert main(["run", *SWEEP, "--results", str(where / "results"), "--workdir", str(where / "work"),
                 "--no-progress", "--allow-dirty"]) == 0
    return published(where / "results")


def published(results: Path) -> tuple[dict, dict]:
    records = {r.seed: {k: getattr(r, k) for k in COMPARED} for r in read_records(results)}
    history = json.loads(history_path(results, "tiny-synthetic", "slow-clip").read_text())
    return records, {"trials": history["trials"], "seeds": history["seeds"]}


def start(cwd: Path, stores: list[str], lease_s: float = 60, **env: str) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", LEASE_ENV: str(lease_s),
                        SLOW_CLIP_PAUSE_ENV: "0.15"} | env
    return subprocess.Popen([sys.executable, "-m", "tests.run_harness", "run", *SWEEP, "--no-progress", *stores],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def the_study(storage) -> optuna.Study | None:
    studies = storage.get_all_studies()
    return optuna.load_study(study_name=studies[0].study_name, storage=storage) if studies else None


def wait_for(process: subprocess.Popen, storage, what, timeout: float = 180):
    """Poll the storage until `what(study)` names something; fail with the worker's output if it ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        with contextlib.suppress(Exception):  # the study may not exist yet, or be mid-creation
            study = the_study(storage)
            found = study is not None and what(study)
            if found is not None and found is not False:
                return found
        time.sleep(0.05)
    raise AssertionError(f"{what.__name__} never happened")


def wait_for_run(process: subprocess.Popen, tracking: str, tag: str, value: str, timeout: float = 60) -> None:
    """Until the MLflow run tagged `tag`=`value` exists: a claim is written just before its run is made."""
    client = mlflow.MlflowClient(tracking)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        experiment = client.get_experiment_by_name("harness/tiny-synthetic")
        if experiment and client.search_runs([experiment.experiment_id], filter_string=f"tags.`{tag}` = '{value}'"):
            return
        time.sleep(0.05)
    raise AssertionError(f"no MLflow run tagged {tag}={value}")


def training_slot_1(study: optuna.Study) -> int | None:
    """The Optuna number of the trial filling slot 1 while it trains (its parameters drawn), else None."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.system_attrs.get(SLOT_KEY) == 1 and trial.params:
            return trial.number
    return None


def training_seed_1(study: optuna.Study) -> dict | None:
    claim = study._storage.get_study_system_attrs(study._study_id).get(f"{SEED_PREFIX}1")
    return claim if claim and claim["state"] == "running" else None


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    return output


def stores_for(kind: str, tmp_path: Path, stack: contextlib.ExitStack) -> tuple[list[str], str, str]:
    """Command-line stores, the Optuna storage URL and the MLflow tracking URI for one kind of deployment."""
    (tmp_path / "work").mkdir()
    if kind == "sqlite":
        storage, tracking = f"sqlite:///{tmp_path / 'work' / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        if postgres_bindir() is None:
            pytest.skip("PostgreSQL is not installed here (no initdb); CI installs it (.ci/run)")
        storage, tracking = stack.enter_context(postgres_server()), stack.enter_context(mlflow_server(tmp_path))
    args = ["--storage", storage, "--tracking-uri", tracking, "--results", str(tmp_path / "results"),
            "--workdir", str(tmp_path / "work")]
    return args, storage, tracking


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_worker_killed_mid_trial_then_one_killed_mid_seed_change_nothing_published(kind, tmp_path, one_process,
                                                                                      capsys):
    """Kill-and-rerun with one worker at a time, compared with one uninterrupted process.

    One worker at a time, because that is what makes the comparison exact: a trial's parameters depend on
    its sampler's seed (its slot) and on the trials finished before it, and its pruning on the trials
    finished before it. With one worker both are the same as in one process whatever was killed, so any
    difference is the fault's. (With several workers the trials that finish first differ from run to run,
    so two uninterrupted multi-worker sweeps need not agree either.) Before slots, the retry of the killed
    trial took a new number: another training seed, and the next trial drew the parameters of the one
    after it."""
    with contextlib.ExitStack() as stack:
        args, url, tracking = stores_for(kind, tmp_path, stack)
        storage = optuna.storages.RDBStorage(url)
        first = start(tmp_path, args)
        killed_trial = wait_for(first, storage, training_slot_1)
        wait_for_run(first, tracking, "harness.optuna_trial", str(killed_trial))  # killed while it trains
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start(tmp_path, args)
        killed_seed = wait_for(second, storage, training_seed_1)
        wait_for_run(second, tracking, "harness.seed_claim", killed_seed["claim_id"])
        second.send_signal(signal.SIGKILL)
        second.wait()
        finish(start(tmp_path, args))

        assert published(tmp_path / "results") == one_process  # parameters, metrics, history: all equal
        trials = the_study(storage).trials
        retry = next(t for t in trials if t.system_attrs.get(RETRY_OF_KEY) == killed_trial)
        assert retry.system_attrs[SLOT_KEY] == 1 and retry.state == TrialState.COMPLETE
        assert retry.params == trials[killed_trial].params and trials[killed_trial].system_attrs[ABANDONED_KEY]
        client = mlflow.MlflowClient(tracking)
        runs = client.search_runs([client.get_experiment_by_name("harness/tiny-synthetic").experiment_id],
                                  run_view_type=mlflow.entities.ViewType.ALL)
        attempts = {r.data.tags.get("harness.optuna_trial"): r for r in runs if r.info.run_name == "trial-1"}
        assert attempts[str(killed_trial)].info.status == "KILLED"  # not RUNNING for good
        assert attempts[str(retry.number)].info.status == "FINISHED"
        lost = [r for r in runs if r.data.tags.get("harness.seed_claim") == killed_seed["claim_id"]]
        assert [(r.info.status, r.info.lifecycle_stage) for r in lost] == [("KILLED", "deleted")]
        assert all(r.info.status != "RUNNING" for r in runs)
        capsys.readouterr()
        assert main(["status", *args[:2], *args[4:]]) == 0  # what status says of it, on this storage
        status = capsys.readouterr().out
        assert "trials   3 done, 0 running, 0 failed, 1 retried; 0 to start" in status
        assert "seeds    2 (0, 1) settled, 0 running, 0 failed; 0 to start; 2 of 2 records" in status


def test_a_worker_killed_inside_the_give_back_of_a_killed_trial_changes_nothing_published(tmp_path, one_process):
    """The next worker gives the killed trial back and is killed itself after writing its decision, before
    the retry (where the budget slot was lost for good when a give-back was three separate writes); a third
    run completes the give-back and the sweep, and publishes what one process publishes."""
    args, url, _tracking = stores_for("sqlite", tmp_path, contextlib.ExitStack())
    storage = optuna.storages.RDBStorage(url)
    first = start(tmp_path, args)
    killed_trial = wait_for(first, storage, training_slot_1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = start(tmp_path, args, **{STOP_ENV: "retry"})
    assert second.wait(timeout=300) == -signal.SIGKILL, second.communicate()[0][-3000:]
    assert not any(t.system_attrs.get(RETRY_OF_KEY) == killed_trial for t in the_study(storage).trials)
    finish(start(tmp_path, args))
    assert published(tmp_path / "results") == one_process
    retry = next(t for t in the_study(storage).trials if t.system_attrs.get(RETRY_OF_KEY) == killed_trial)
    assert retry.system_attrs[SLOT_KEY] == 1 and retry.system_attrs[DEATHS_KEY] == 1


def test_a_worker_that_stalled_past_its_lease_writes_nothing(tmp_path):
    """A stalled machine (SIGSTOP) loses its seed to another worker after the lease; when it wakes up and
    finishes training, it must not write its record over the other's, nor point at the run that worker
    removed."""
    args = ["--storage", f"sqlite:///{tmp_path / 'work' / 'optuna.db'}", "--results", str(tmp_path / "results"),
            "--workdir", str(tmp_path / "work")]
    (tmp_path / "work").mkdir()
    storage = optuna.storages.RDBStorage(args[1])
    stalled = start(tmp_path, args, lease_s=3)
    lost_claim = wait_for(stalled, storage, training_seed_1)
    stop_outside_the_mutex(stalled, tmp_path / "work" / "optuna.db.workers.lock")
    try:
        finish(start(tmp_path, args, lease_s=3))  # takes seed 1 over once the lease is out, and ends the sweep
        record = (tmp_path / "results" / "records" / "tiny-synthetic" / "slow-clip" / "seed1.json").read_text()
    finally:
        stalled.send_signal(signal.SIGCONT)
    output = finish(stalled)
    assert "seed 1 was taken over by another worker while this one trained it" in output
    assert (tmp_path / "results" / "records" / "tiny-synthetic" / "slow-clip" / "seed1.json").read_text() == record
    run_id = json.loads(record)["mlflow_run_id"]
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}").get_run(run_id)
    assert run.info.lifecycle_stage == "active" and run.data.tags["harness.seed_claim"] != lost_claim["claim_id"]


def stop_outside_the_mutex(process: subprocess.Popen, lock: Path) -> None:
    """SIGSTOP the process at a moment it holds no file lock: not the workers' flock (a stopped holder would
    block everyone: only a dead one releases it), nor sqlite's locks on the Optuna or MLflow store (a stopped
    writer leaves the others "database is locked")."""
    for _ in range(200):
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.01)  # let a signal in flight land
        if not _holds_a_lock(process.pid):
            with open(lock, "a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    return
                except BlockingIOError:
                    pass
        process.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("the worker never let go of its locks")


def _holds_a_lock(pid: int) -> bool:
    """Whether /proc/locks lists a lock (POSIX, as sqlite takes, or flock) owned by `pid`."""
    with open("/proc/locks") as locks:
        return any(line.split()[4] == str(pid) for line in locks if len(line.split()) > 4 and "->" not in line)

