"""A new sqlite MLflow store starts as a copy of an empty one kept in the machine's cache, not by
running every migration again; what it holds and accepts is what a freshly created store does."""

import mlflow.store.db.utils
import pytest

from harness.running import tracking
from harness.running.workdir import CACHE_ENV


def test_a_new_store_is_a_copy_of_the_kept_empty_one(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = tracking.Tracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", tmp_path / "a" / "artifacts")
    assert tracking._empty_store().exists()
    first.create_run("harness/t", "clip", {"lr": 0.1})  # writing to the first store leaves the kept copy empty

    def no_migrations(*args, **kwargs):
        raise AssertionError("a store was migrated although an empty one was kept")

    monkeypatch.setattr(mlflow.store.db.utils, "_upgrade_db", no_migrations)
    second = tracking.Tracker(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", tmp_path / "b" / "artifacts")
    assert [e.name for e in second.client.search_experiments()] == ["Default"]
    run = second.create_run("harness/t", "simclr", {"lr": 0.2})
    assert second.client.get_run(run).data.params == {"lr": "0.2"}


def test_an_unreadable_cache_only_costs_the_migrations(tmp_path, monkeypatch):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    store = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts")
    assert [e.name for e in store.client.search_experiments()] == ["Default"]
    with pytest.raises(OSError):
        tracking._empty_store().stat()
