"""What a run leaves beyond its records (history, figure, MLflow summary, the closing table) and reproduction."""

import json

import mlflow
import pytest

from harness.cli import main
from harness.results.records import read_records
from harness.running import commit, environment
from harness.running.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from tests.fixtures import TEST_COMMIT


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """This module's own MLflow store: its parent runs must not count in other modules' run listings."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-run-outputs') / 'mlflow.db'}"


@pytest.fixture
def clean_commit(monkeypatch):
    """Runs here are made from a named commit, whatever state the developer's checkout is in."""
    monkeypatch.setattr(environment, "git_commit", lambda: "0123456789ab")


def test_a_run_ends_with_its_table_and_keeps_history_figure_and_summary(harness_run, tracking_uri, capsys):
    assert harness_run("--method", "clip", "--task", "tiny-synthetic", "--trials", "2", "--seeds", "2") == 0
    out = capsys.readouterr().out
    records = sorted(read_records(harness_run.results), key=lambda r: r.seed)
    mean = sum(r.metrics["test_acc"] for r in records) / 2
    line = next(ln for ln in out.splitlines() if ln.startswith("tiny-synthetic"))
    assert "clip" in line and f"{100 * mean:.2f} ± " in line and "(2)" in line
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in out and str(harness_run.results / "records") in out
    experiment_id = mlflow.MlflowClient(tracking_uri).get_experiment_by_name("harness/tiny-synthetic").experiment_id
    assert f"#/experiments/{experiment_id}/runs?workflowType=machine_learning" in out  # opens on its runs

    history = json.loads((harness_run.results / "history" / "tiny-synthetic" / "clip.json").read_text())
    assert [t["number"] for t in history["trials"]] == [0, 1]
    assert sorted(history["seeds"]) == ["0", "1"] and all(len(c) == 1 for c in history["seeds"].values())
    assert 0 <= history["seeds"]["0"][0]["val_quick_acc"] <= 1
    figure = harness_run.results / "figures" / "history" / "tiny-synthetic" / "clip.svg"
    assert figure.read_text().startswith("<?xml") and str(figure) in line

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("harness/tiny-synthetic")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # the UI opens it on its runs
    parent = next(r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "clip")
    assert parent.data.metrics["test_acc_mean"] == pytest.approx(mean)  # float64 through MLflow: an ulp at most
    assert parent.data.metrics["test_acc_ci95_low"] <= mean <= parent.data.metrics["test_acc_ci95_high"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_hparams.json", "clip.svg", "clip.json"} <= artifacts
    # Searchable: the best configuration as params, the code as a tag; the seeds' count is no metric.
    best = {key.removeprefix("best."): value for key, value in parent.data.params.items() if key.startswith("best.")}
    assert best == {key: str(value) for key, value in records[0].hparams.items()}
    assert parent.data.tags["harness.git_commit"] == TEST_COMMIT and parent.data.tags["test_acc_seeds"] == "2"
    assert "test_acc_seeds" not in parent.data.metrics
    for record in records:
        seed_run = client.get_run(record.mlflow_run_id)
        assert seed_run.data.tags["harness.git_commit"] == TEST_COMMIT
        model = [a.path for a in client.list_artifacts(record.mlflow_run_id, "model")]
        assert len(model) == 1 and model[0].startswith(f"model/seed{record.seed}-"), model


def test_a_run_from_uncommitted_changes_is_refused_without_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(environment, "git_commit", lambda: "0123456789ab-dirty")
    code = main(["run", "--method", "untrained", "--task", "tiny-synthetic", "--results", str(tmp_path / "r"),
                 "--workdir", str(tmp_path / "w"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--allow-dirty" in err[0]
    assert not (tmp_path / "r").exists()


def reproduce(record, harness_run, tracking_uri, *extra):
    return main(["reproduce", str(record), "--workdir", str(harness_run.workdir), "--tracking-uri", tracking_uri,
                 "--no-progress", *extra])


def test_reproduce_reruns_a_record_exactly_and_refuses_one_that_no_longer_matches(
        harness_run, tracking_uri, clean_commit, capsys):
    assert harness_run("--method", "clip", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1") == 0
    path = harness_run.results / "records" / "tiny-synthetic" / "clip" / "seed0.json"
    recorded = json.loads(path.read_text())
    capsys.readouterr()
    assert reproduce(path, harness_run, tracking_uri) == 0
    out = capsys.readouterr().out
    row = next(ln.split() for ln in out.splitlines() if ln.startswith("test_acc"))
    assert row == ["test_acc", f"{100 * recorded['metrics']['test_acc']:.2f}",
                   f"{100 * recorded['metrics']['test_acc']:.2f}", "+0.00"]

    for change, says in ((("task", "fingerprint"), "fingerprint"), (("method", "version"), "the record's is elsewhere"),
                         (("environment", "git_commit"), "uncommitted changes")):
        altered = json.loads(path.read_text())
        altered[change[0]][change[1]] = "0123456789ab-dirty" if change[1] == "git_commit" else "elsewhere"
        other = path.with_name("altered.json")
        other.write_text(json.dumps(altered))
        assert reproduce(other, harness_run, tracking_uri) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "will not reproduce" in err[0] and says in err[0], err


def test_reproducing_something_that_is_not_a_record_is_one_line(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{}")
    assert main(["reproduce", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "x.json") in err[0] and "the record lacks field(s)" in err[0]


UNPATCHED_GIT_COMMIT = commit.git_commit.__wrapped__  # uncached; conftest pins environment.git_commit, not this


def test_a_copy_without_git_names_the_commit_its_launcher_declares(tmp_path, monkeypatch):
    monkeypatch.setattr(commit, "PROJECT_ROOT", tmp_path)  # a tree copied without its .git folder
    monkeypatch.delenv(commit.SOURCE_COMMIT_ENV, raising=False)
    assert UNPATCHED_GIT_COMMIT() == "unknown"
    monkeypatch.setenv(commit.SOURCE_COMMIT_ENV, "0123456789ab")
    assert UNPATCHED_GIT_COMMIT() == "0123456789ab"
