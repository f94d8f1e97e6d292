"""Every bad input gets one line naming the problem and the fix, exit code 2, no traceback."""

import argparse
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import optuna
from optuna.trial import TrialState
import pytest

import harness
from harness.api.errors import HarnessError
from harness.cli.app import build_parser, main
from harness.results.records import read_records
from harness.running.coordination import ABANDONED_KEY
from harness.running import commit
from harness.running.environment import resolve_device
from harness.running.request import is_device_name

ROOT = Path(__file__).resolve().parent.parent


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("argv, expected", [
    (["run", "--method", "clp", "--task", "synthetic"], "unknown method 'clp'; did you mean 'clip'?"),
    (["run", "--method", "clip", "--task", "synthetc"], "unknown task 'synthetc'; did you mean 'synthetic'?"),
    (["run", "--method", "clip", "--task", "synthetic", "--set", "lr"], "malformed --set 'lr'"),
    (["run", "--method", "clip", "--task", "synthetic", "--set", "lrr=1"], "--set lrr: no such hyperparameter"),
    (["run", "--method", "clip", "--task", "synthetic", "--trials", "0"], "--trials: must be at least 1, got 0"),
    (["run", "--method", "clip", "--task", "synthetic", "--seeds", "-1"], "--seeds: must be at least 1, got -1"),
    (["run", "--method", "clip", "--task", "synthetic", "--epochs", "x"], "--epochs: 'x' is not a whole number"),
    (["run", "--method", "clip", "--task", "synthetic", "--data-dir", "/no/such/dir"],
     "data directory /no/such/dir does not exist"),
    (["run", "--method", "clip", "--task", "single-modality"],
     "method clip cannot run on task single-modality: it needs 2 modalities"),
    (["run", "--method", "clip", "--task", "synthetic", "--device", "tpu"],
     "argument --device: 'tpu' is no device; choose auto, cpu, cuda or cuda:N"),
    (["run", "--method", "clip", "--task", "synthetic", "--devices", "cpu,cuda:x"],
     "argument --devices: 'cuda:x' is no device; choose auto, cpu, cuda or cuda:N"),
    (["diagnose", "--method", "clip", "--task", "synthetic", "--device", "gpu"],
     "argument --device: 'gpu' is no device"),
    (["reproduce", "seed0.json", "--device", "cuda0"], "argument --device: 'cuda0' is no device"),
    (["run", "--method", "clip", "--task", "synthetic", "--tracking-uri", "./mlruns"],
     "MLflow no longer accepts a file store"),
    (["run", "--method", "clip", "--task", "synthetic", "--force", "--keep-old"],
     "argument --keep-old: not allowed with argument --force"),
    (["list", "widgets"], "invalid choice: 'widgets'"),
    (["data", "check", "synthetik"], "unknown task 'synthetik'; did you mean 'synthetic'?"),
])
def test_bad_input_gets_one_line_and_exit_code_2(argv, expected, capsys, tmp_path):
    argv = argv + (["--workdir", str(tmp_path), "--results", str(tmp_path)] if argv[0] == "run" else [])
    assert main(argv) == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "records").exists()  # nothing was written on bad input


def test_a_run_records_every_seed_and_tracks_it_in_mlflow(harness_run, tracking_uri, capsys):
    assert harness_run("--method", "clip,untrained", "--task", "tiny-synthetic", "--trials", "2", "--seeds", "2") == 0
    records = list(read_records(harness_run.results))
    assert sorted((r.method["name"], r.seed) for r in records) == [("clip", 0), ("clip", 1), ("untrained", 0),
                                                                  ("untrained", 1)]
    clip = next(r for r in records if r.method["name"] == "clip")
    assert clip.protocol == {"epochs": 1, "trials": 2, "seeds": 2, "batch_size": 64}
    assert {"test_acc", "test_f1", "val_acc"} <= set(clip.metrics) and 0 <= clip.metrics["test_acc"] <= 1
    assert clip.task["fingerprint"] and clip.environment["torch"] and clip.wall_time_s > 0
    assert clip.hparams["lr"] != 1e-3  # the tuned value, not the default
    untrained = next(r for r in records if r.method["name"] == "untrained")
    assert untrained.protocol["epochs"] == 0 and untrained.protocol["trials"] == 0

    import mlflow

    runs = mlflow.MlflowClient(tracking_uri).search_runs(
        [mlflow.get_experiment_by_name("harness/tiny-synthetic").experiment_id])
    # The store is the test session's: earlier tests left runs of their own, so count this pair's alone.
    seed_run = next(r for r in runs if r.info.run_id == clip.mlflow_run_id)
    parent = seed_run.data.tags["mlflow.parentRunId"]
    assert seed_run.data.metrics["test_acc"] == clip.metrics["test_acc"]
    assert next(r for r in runs if r.info.run_id == parent).info.run_name == "clip"
    children = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent)
    assert children == ["seed-0", "seed-1", "trial-0", "trial-1"]


def test_rerunning_trains_nothing_and_force_reruns(harness_run, caplog):
    args = ("--method", "untrained", "--task", "tiny-synthetic", "--seeds", "1")
    assert harness_run(*args) == 0
    path = harness_run.results / "records" / "tiny-synthetic" / "untrained" / "seed0.json"
    first = json.loads(path.read_text())["finished_at"]
    caplog.clear()
    assert harness_run(*args) == 0
    assert "nothing to train" in caplog.text
    assert json.loads(path.read_text())["finished_at"] == first
    caplog.clear()
    assert harness_run(*args, "--force") == 0
    assert "1 seed(s) trained and recorded" in caplog.text


def test_an_interrupted_study_continues_where_it_stopped(harness_run):
    assert harness_run("--method", "clip", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1") == 0
    shutil.rmtree(harness_run.results)  # as if the first call had stopped after its first trial
    assert harness_run("--method", "clip", "--task", "tiny-synthetic", "--trials", "3", "--seeds", "1") == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(harness_run.workdir / "optuna.journal")))
    (study,) = optuna.get_all_study_summaries(storage)
    assert study.n_trials == 3  # one from the first call, two more from the second


def test_diverging_runs_fail_alone_and_the_sweep_goes_on(harness_run, caplog):
    code = harness_run("--method", "diverges-on-odd-seeds,untrained", "--task", "tiny-synthetic",
                       "--trials", "4", "--seeds", "3")
    assert code == 1  # a failure is reported, but everything else ran
    kept = sorted((r.method["name"], r.seed) for r in read_records(harness_run.results))
    assert ("diverges-on-odd-seeds", 1) not in kept
    assert {("diverges-on-odd-seeds", 0), ("diverges-on-odd-seeds", 2), ("untrained", 2)} <= set(kept)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(harness_run.workdir / "optuna.journal")))
    trials = optuna.load_study(study_name=optuna.get_all_study_summaries(storage)[0].study_name,
                               storage=storage).trials
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]  # trial seeds 1000..1003
    assert "seed 1 diverged" in caplog.text


def test_bad_input_met_inside_a_trial_leaves_the_trial_to_the_rerun(harness_run, monkeypatch, capsys):
    """A bad-input error is the user's to fix, not the trial's failure: once fixed, the rerun tunes in the
    same work folder (a trial marked failed would leave "no trial completed" for good)."""
    from tests.fixtures import RefusesItsInputWhileTuning

    monkeypatch.setenv(RefusesItsInputWhileTuning.BAD_INPUT_ENV, "1")
    args = ("--method", "refuses-its-input-while-tuning", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1")
    assert harness_run(*args) == 2
    assert "the test's input file is missing" in capsys.readouterr().err
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(harness_run.workdir / "optuna.journal")))
    trials = optuna.load_study(study_name=optuna.get_all_study_summaries(storage)[0].study_name,
                               storage=storage).trials
    # Given back (the attempt closed as abandoned, its slot waiting for a retry), never failed as the trial's own.
    assert [t.state for t in trials if not t.system_attrs.get(ABANDONED_KEY)] == [TrialState.WAITING]
    monkeypatch.delenv(RefusesItsInputWhileTuning.BAD_INPUT_ENV)
    assert harness_run(*args) == 0
    assert [(r.method["name"], r.status) for r in read_records(harness_run.results)] == [
        ("refuses-its-input-while-tuning", "ok")]


def test_in_a_cross_product_an_inapplicable_pair_is_recorded_as_not_applicable(harness_run):
    assert harness_run("--method", "clip,untrained", "--task", "single-modality", "--seeds", "1") == 0
    status = {r.method["name"]: (r.status, r.reason) for r in read_records(harness_run.results)}
    assert status["clip"] == ("n/a", "needs 2 modalities") and status["untrained"][0] == "ok"


def test_list_shows_requirements_and_data_presence(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "clip" in out and "2+ modalities" in out and "augmentations" in out
    assert main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "x1:tabular[100]" in out


def test_a_failed_assumption_check_fails_its_trial_and_is_recorded_with_its_seed(harness_run, caplog):
    code = harness_run("--method", "fails-check-on-odd-seeds", "--task", "tiny-synthetic", "--trials", "4",
                       "--seeds", "2", "--epochs", "1")
    assert code == 0  # the seeds trained and were recorded; the record says which check failed
    checks = {r.seed: r.checks["even_seed"] for r in read_records(harness_run.results)}
    assert checks[0]["held"] is True and checks[1]["held"] is False
    assert checks[1]["detail"] == "seed parity 1"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(harness_run.workdir / "optuna.journal")))
    trials = optuna.load_study(study_name=optuna.get_all_study_summaries(storage)[0].study_name,
                               storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]  # trial seeds 1000..1003
    assert "seed 1: recorded, but its assumption check failed: seed parity 1" in caplog.text




def _actions(parser: argparse.ArgumentParser):
    """(parser, action) for every option and positional of `parser` and of every command under it, and for
    each command's own line in its parent's list."""
    for action in parser._actions:
        yield parser, action
        if isinstance(action, argparse._SubParsersAction):
            yield from ((parser, command) for command in action._choices_actions)
            for subparser in action.choices.values():
                yield from _actions(subparser)


def test_every_option_positional_and_command_says_what_it_is_for():
    silent = [f"{parser.prog}: {'/'.join(action.option_strings) or action.dest}"
              for parser, action in _actions(build_parser()) if not action.help]
    assert silent == []


def test_version_names_the_running_code_and_its_commit(capsys, monkeypatch):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"harness {harness.__version__} (commit {commit.git_commit()})\n"
    monkeypatch.setattr(commit, "git_commit", lambda: "unknown")  # a copy without .git, and no commit declared
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"harness {harness.__version__}\n"


def test_the_version_is_the_one_the_package_declares():
    # --version and every record say harness.__version__; pip installs pyproject's: they must agree.
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert harness.__version__ == declared


@pytest.mark.parametrize("argv", [
    ["--version"],
    ["run", "--method", "clip", "--task", "synthetic", "--device", "gpu"],
    ["run", "--method", "clip", "--task", "synthetic", "--devices", "cuda:0,gpu"],
    ["diagnose", "--method", "clip", "--task", "synthetic", "--device", "gpu"],
    ["data", "check", "synthetik"],
], ids=" ".join)
def test_the_version_and_a_misspelt_device_or_task_are_answered_without_torch(argv):
    check = (f"import sys\nfrom harness.cli import main\ntry:\n    code = main({argv!r})\n"
             "except SystemExit as stop:\n    code = stop.code\n"
             "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(code)\n")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    if argv == ["--version"]:
        assert done.returncode == 0 and done.stdout.startswith(f"harness {harness.__version__}"), done.stderr
    else:
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr


def test_a_device_is_judged_by_its_spelling():
    assert all(is_device_name(name) for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"))
    assert not any(is_device_name(name) for name in ("gpu", "mps", "CPU", " cpu", "cuda:", "cuda:x", "cuda:-1",
                                                      "cuda:\u0663", "cuda0", "cuda:0,cuda:1", ""))
    with pytest.raises(HarnessError, match="choose auto, cpu, cuda or cuda:N"):  # from Python, past the parser
        resolve_device("gpu")


def test_data_check_says_what_a_generated_task_is(capsys):
    assert main(["data", "check", "tiny-synthetic"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "data: generated in memory by the task's code (no files to read or check)"
    assert lines[-1] == ("ok: no split empty, shapes as declared, values finite, labels in 0..1, "
                         "every class in train")
