"""Many workers, one sweep: separate `harness run` processes and `--workers N` share one trial budget,
train each seed once, and recover a worker killed with SIGKILL. Real processes, real stores, real
servers (PostgreSQL and `mlflow server`, started here on local ports)."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from harness.cli.app import RUNS_DIR, main
from harness.results.records import read_records
from harness.running.coordination import ABANDONED_KEY, LEASE_ENV, LEASE_KEY, SEED_PREFIX, counts_against_budget
from tests.servers import mlflow_server, postgres_bindir, postgres_server

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["--method", "clip,untrained", "--task", "tiny-synthetic", "--trials", "3", "--seeds", "2"]


def start_copies(count: int, cwd: Path, *extra: str, lease_s: float = 60) -> list[subprocess.Popen]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", LEASE_ENV: str(lease_s)}
    return [subprocess.Popen([sys.executable, "-m", "tests.run_harness", "run", *SWEEP, "--no-progress", *extra],
                             cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(count)]


def wait_all(processes: list[subprocess.Popen]) -> list[int]:
    codes = []
    for process in processes:
        output, _ = process.communicate(timeout=300)
        codes.append(process.returncode)
        assert process.returncode in (0, -signal.SIGKILL), output[-3000:]
    return codes


def assert_exact_sweep(storage, tracking_uri: str, results: Path, trials: int = 3, seeds: int = 2) -> None:
    """Exactly the budget of finished trials per study, one MLflow seed run and one record per seed."""
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states = [t.state for t in study.trials]
        budget = trials if "/clip@" in summary.study_name else 0
        assert sum(counts_against_budget(t) for t in study.trials) == budget, (summary.study_name, states)
        assert optuna.trial.TrialState.RUNNING not in states
        drawn = [t.params["lr"] for t in study.trials if counts_against_budget(t)]
        assert len(set(drawn)) == len(drawn)  # workers did not all try the same parameters
    records = list(read_records(results))
    assert sorted((r.method["name"], r.seed) for r in records) == sorted(
        (m, s) for m in ("clip", "untrained") for s in range(seeds))
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("harness/tiny-synthetic").experiment_id])
    parents = {r.info.run_id: r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert sorted(parents.values()) == ["clip", "untrained"]  # one parent run per pair, whoever made it
    assert {r.info.status for r in runs if r.info.run_id in parents} == {"FINISHED"}
    seed_runs = collections.Counter((parents[r.data.tags["mlflow.parentRunId"]], r.info.run_name)
                                    for r in runs if r.info.run_name.startswith("seed-"))
    assert seed_runs == {(m, f"seed-{s}"): 1 for m in ("clip", "untrained") for s in range(seeds)}
    by_id = {r.info.run_id: r for r in runs}
    for record in records:  # each record is the run that trained it
        assert by_id[record.mlflow_run_id].data.metrics["test_acc"] == record.metrics["test_acc"]


def journal(workdir: Path):
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(workdir / "optuna.journal")))


@pytest.mark.parametrize("copies", [2, 4])
def test_copies_of_one_command_started_at_once_share_the_default_stores(copies, tmp_path):
    codes = wait_all(start_copies(copies, tmp_path))
    assert codes == [0] * copies
    work = tmp_path / ".harness"
    assert_exact_sweep(journal(work), f"sqlite:///{work / 'mlflow.db'}", tmp_path / RUNS_DIR)  # the default


def test_workers_share_one_sweep_and_match_a_single_process(tmp_path, caplog):
    args = ["run", *SWEEP, "--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")]
    assert main([*args, "--workers", "4", "--no-progress"]) == 0
    uri = f"sqlite:///{(tmp_path / 'work' / 'mlflow.db').resolve()}"
    assert_exact_sweep(journal(tmp_path / "work"), uri, tmp_path / "results")
    logs = "".join(p.read_text() for p in (tmp_path / "work" / "logs").glob("worker-*.log"))
    assert logs.count("seed(s) trained and recorded") >= 2  # every worker reported its share
    caplog.clear()
    assert main(args) == 0  # the same command in one process: nothing left to do
    assert caplog.text.count("nothing to train") == 2
    # A machine that shares no disk with the workers collects their records by running the same command.
    collected = tmp_path / "collected"
    args[args.index("--results") + 1] = str(collected)
    assert main(args) == 0
    assert caplog.text.count("0 seed(s) trained and recorded, 2 recorded by other workers") == 2
    assert_exact_sweep(journal(tmp_path / "work"), uri, collected)  # and still one seed run per seed
    # Or, with no registry and no data at hand, straight from the storage:
    assert main(["collect", "--workdir", str(tmp_path / "work"), "--results", str(tmp_path / "gathered")]) == 0
    assert "4 record(s) written" in caplog.text
    assert sorted(p.read_text() for p in (tmp_path / "gathered").rglob("seed*.json")) == \
        sorted(p.read_text() for p in (tmp_path / "results").rglob("seed*.json"))


@pytest.mark.system  # slow: .ci/run runs it after the default suite
@pytest.mark.skipif(postgres_bindir() is None,
                    reason="PostgreSQL is not installed here (no initdb); CI installs it (.ci/run)")
def test_four_workers_on_postgresql_and_an_mlflow_server_survive_a_sigkill(tmp_path):
    with postgres_server() as database, mlflow_server(tmp_path) as tracking:
        storage_args = ("--storage", database, "--tracking-uri", tracking, "--epochs", "4")
        workers = start_copies(4, tmp_path, *storage_args, lease_s=3)
        storage = optuna.storages.RDBStorage(database)
        victim = kill_a_worker_holding(storage, workers, trial_holder)
        kill_a_worker_holding(storage, workers, seed_holder)
        codes = wait_all(workers)
        assert codes.count(-signal.SIGKILL) == 2 and codes.count(0) == 2, codes
        assert_exact_sweep(storage, tracking, tmp_path / RUNS_DIR)  # the killed seed kept one MLflow run
        clip = next(s for s in optuna.get_all_study_summaries(storage) if "/clip@" in s.study_name)
        trials = optuna.load_study(study_name=clip.study_name, storage=storage).trials
        assert [t.number for t in trials if t.system_attrs.get(ABANDONED_KEY)] == [victim]  # retried, not counted


def trial_holder(study: optuna.Study) -> tuple[str, int] | None:
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.RUNNING and trial.system_attrs.get(LEASE_KEY):
            return trial.system_attrs[LEASE_KEY]["owner"], trial.number
    return None


def seed_holder(study: optuna.Study) -> tuple[str, int] | None:
    for key, claim in study._storage.get_study_system_attrs(study._study_id).items():
        if key.startswith(SEED_PREFIX) and claim["state"] == "running" and claim["lease"]:
            return claim["lease"]["owner"], int(key.removeprefix(SEED_PREFIX))
    return None


def kill_a_worker_holding(storage, workers: list[subprocess.Popen], holder) -> int:
    """SIGKILL a live worker the first time `holder(study)` names it; what it held (a trial or seed number)."""
    alive = {w.pid: w for w in workers if w.poll() is None}
    deadline = time.time() + 120
    while time.time() < deadline:
        for summary in optuna.get_all_study_summaries(storage):
            held = holder(optuna.load_study(study_name=summary.study_name, storage=storage))
            if held and int(held[0].split(":")[1]) in alive:
                alive[int(held[0].split(":")[1])].send_signal(signal.SIGKILL)
                return held[1]
        time.sleep(0.1)
    raise AssertionError(f"no live worker was seen holding work ({holder.__name__})")
