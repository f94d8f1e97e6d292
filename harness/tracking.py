"""MLflow tracking: an experiment per task, a parent run per (task, method),
a nested run per trial and per seed.

The store is created (and migrated) once by the main process before any work
starts, since two processes creating one sqlite store at once corrupt it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from harness.errors import HarnessError  # noqa: E402

for noisy in ("alembic", "mlflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def default_uri(workdir: Path) -> str:
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def check_uri(uri: str) -> None:
    """Refuse a URI MLflow cannot use, before anything is opened or created."""
    if uri.startswith("file:") or "://" not in uri:
        raise HarnessError(
            f"--tracking-uri {uri}: MLflow no longer accepts a file store; "
            "give a sqlite:///path.db or http://server URI"
        )


class Tracker:
    def __init__(self, uri: str, artifact_root: Path):
        check_uri(uri)
        self.uri = uri
        self.artifact_root = Path(artifact_root)
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
        try:
            self.client = MlflowClient(uri)
            self.client.search_experiments(max_results=1)  # creates and migrates the store now
        except Exception as exc:  # the store's own error text names the cause
            raise HarnessError(f"--tracking-uri {uri}: cannot open the MLflow store ({exc}); check the URI") from None

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = (self.artifact_root / name.replace("/", "_")).resolve().as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    @contextlib.contextmanager
    def parent_run(self, experiment: str, run_name: str, params: dict[str, Any]) -> Iterator[str]:
        experiment_id = self._experiment(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_params(_flat(params))
            yield run.info.run_id

    @contextlib.contextmanager
    def child_run(self, run_name: str, params: dict[str, Any]) -> Iterator[str]:
        # Without the parent's experiment id MLflow files a nested run under "Default".
        parent = mlflow.active_run()
        with mlflow.start_run(experiment_id=parent.info.experiment_id, run_name=run_name, nested=True) as run:
            mlflow.log_params(_flat(params))
            yield run.info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)

    def log_dict(self, payload: dict[str, Any], artifact_file: str) -> None:
        mlflow.log_dict(payload, artifact_file)

    def set_tags(self, tags: dict[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)[:500]
    return flat
