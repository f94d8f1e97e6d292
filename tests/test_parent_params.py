"""The best configuration goes to the parent run's params once, whichever of a sweep's workers gets there first:
a worker whose read of the run is stale (another wrote the params in between) must not fail on the store's refusal.
CI caught four workers on one MLflow server racing here (sqlite's UNIQUE constraint on params.key, run_uuid)."""

import logging

import pytest
from mlflow.exceptions import MlflowException

from harness.running import tracking


@pytest.fixture
def tracker(tmp_path):
    return tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")


def stale_reads(tracker, monkeypatch, run_id):
    """The run as it was before the other worker wrote: its first read says no params are held."""
    before = tracker.client.get_run(run_id)
    reads = []
    real_get_run = tracker.client.get_run

    def get_run(asked):
        reads.append(asked)
        return before if len(reads) == 1 else real_get_run(asked)

    monkeypatch.setattr(tracker.client, "get_run", get_run)


def test_a_worker_that_read_before_another_wrote_keeps_the_first_values(tracker, monkeypatch, caplog):
    run_id = tracker.create_run("harness/t", "clip", {})
    stale_reads(tracker, monkeypatch, run_id)
    tracker.client.log_param(run_id, "best.lr", "0.1")  # the other worker, between our read and our write
    with caplog.at_level(logging.WARNING, logger=tracking.__name__):
        tracker.log_params_once(run_id, {"best.lr": 0.2, "best.batch_size": 64})
    assert tracker.client.get_run(run_id).data.params == {"best.lr": "0.1", "best.batch_size": "64"}
    assert "keeps its earlier best.lr=0.1" in caplog.text


def test_a_refusal_that_persists_is_raised(tracker):
    run_id = tracker.create_run("harness/t", "clip", {})
    tracker.client.delete_run(run_id)
    with pytest.raises(MlflowException):
        tracker.log_params_once(run_id, {"best.lr": 0.2})


def test_a_tag_another_worker_inserted_between_the_stores_lookup_and_insert_is_set_again(tracker, monkeypatch):
    """CI caught this too: two workers tagging the parent run's `test_acc_seeds` at once; the store's insert
    breaks sqlite's UNIQUE constraint on tags.key, run_uuid, which it raises as an MlflowException."""
    run_id = tracker.create_run("harness/t", "clip", {})
    real_set_tag = tracker.client.set_tag
    calls = []

    def set_tag(run, key, value):
        calls.append(value)
        if len(calls) == 1:
            real_set_tag(run, key, "2")  # the other worker, inside our lookup-then-insert
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key, tags.run_uuid")
        return real_set_tag(run, key, value)

    monkeypatch.setattr(tracker.client, "set_tag", set_tag)
    tracker.set_run_tags(run_id, {"test_acc_seeds": 3})
    assert tracker.client.get_run(run_id).data.tags["test_acc_seeds"] == "3" and calls == ["3", "3"]


def test_a_tag_refusal_that_persists_is_raised(tracker):
    run_id = tracker.create_run("harness/t", "clip", {})
    tracker.client.delete_run(run_id)
    with pytest.raises(MlflowException):
        tracker.set_run_tags(run_id, {"test_acc_seeds": 3})
