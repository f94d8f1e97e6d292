"""MLflow tracking: an experiment per task, a parent run per (task, method),
a nested run per trial and per seed.

A sqlite store is created (and migrated) under a file lock beside it, so that of
several processes starting at once exactly one creates it and the rest wait:
two processes creating one sqlite store at once corrupt it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
from mlflow.entities import Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from harness.api.errors import HarnessError  # noqa: E402
from harness.running.coordination import FileMutex  # noqa: E402
from harness.running.workdir import cache_dir  # noqa: E402

log = logging.getLogger(__name__)
for noisy in ("alembic", "mlflow"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


# The kind MLflow 3 records for a model-training experiment (its UI's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
# MLflow 3.17's UI still opens on its GenAI view unless the URL asks for workflowType=machine_learning, so a run
# also prints that link (publishing.run_report.RUNS_VIEW).
# How often a parent run's params are read and written before a refusal is taken as real (log_params_once).
LOG_ATTEMPTS = 3

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def check_uri(uri: str) -> None:
    """Refuse a URI MLflow cannot use, before anything is opened or created."""
    if uri.startswith("file:") or "://" not in uri:
        raise HarnessError(
            f"--tracking-uri {uri}: MLflow no longer accepts a file store; "
            "give a sqlite:///path.db or http://server URI"
        )


def _empty_store() -> Path:
    # Creating a sqlite store runs every MLflow migration from the first (about 6 s on a 2-core CPU); a
    # store made by this MLflow version and not yet written to is the same file wherever it lives.
    return cache_dir() / f"mlflow-empty-store-{mlflow.__version__}.db"


def _copy_empty_store(database: Path) -> bool:
    try:
        shutil.copyfile(_empty_store(), database)
        return True
    except OSError:
        database.unlink(missing_ok=True)
        return False


def _keep_empty_store(database: Path) -> None:
    """Keep a just-created store, before anything is written to it, for the next new work folder."""
    template = _empty_store()
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f"{template.name}.{os.getpid()}.tmp")
        shutil.copyfile(database, partial)
        os.replace(partial, template)
    except OSError as exc:
        log.debug("empty MLflow store not kept (%s); the next new store is created from scratch", exc)


class Tracker:
    def __init__(self, uri: str, artifact_root: Path):
        check_uri(uri)
        self.uri = uri
        self.artifact_root = Path(artifact_root)
        mlflow.set_tracking_uri(uri)
        creation, database = contextlib.nullcontext(), None
        if uri.startswith("sqlite:///"):
            database = Path(uri.removeprefix("sqlite:///"))
            database.parent.mkdir(parents=True, exist_ok=True)
            creation = FileMutex(database.with_name(database.name + ".lock")).hold()
        try:
            with creation:
                new = database is not None and not database.exists()
                copied = new and _copy_empty_store(database)
                self.client = MlflowClient(uri)
                self.client.search_experiments(max_results=1)  # creates and migrates the store now
                if new and not copied:
                    _keep_empty_store(database)
        except Exception as exc:  # the store's own error text names the cause
            raise HarnessError(f"--tracking-uri {uri}: cannot open the MLflow store ({exc}); check the URI") from None
        self._experiments: dict[str, str] = {}

    def _experiment(self, name: str) -> str:
        for _attempt in range(2):  # a worker elsewhere may create it between our look and our create
            experiment = self.client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:
                    self.client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
                return experiment.experiment_id
            # A tracking server keeps artifacts where it was told to; a local store keeps them in the work folder.
            location = None if self.uri.startswith(("http://", "https://")) else \
                (self.artifact_root / name.replace("/", "_")).resolve().as_uri()
            with contextlib.suppress(MlflowException):
                experiment_id = self.client.create_experiment(name, artifact_location=location)
                self.client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
                return experiment_id
        raise HarnessError(f"--tracking-uri {self.uri}: cannot create the MLflow experiment {name}")

    def experiment_ids(self, names) -> dict[str, str]:
        """name -> id for the named experiments that exist."""
        found = {name: self.client.get_experiment_by_name(name) for name in set(names)}
        return {name: experiment.experiment_id for name, experiment in found.items() if experiment is not None}

    def create_run(self, experiment: str, run_name: str, params: dict[str, Any]) -> str:
        """A parent run that any worker can attach children to; it stays open until finished."""
        run = self.client.create_run(self._experiment(experiment), run_name=run_name)
        for key, value in _flat(params).items():
            self.client.log_param(run.info.run_id, key, value)
        return run.info.run_id

    def end_run(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")

    def delete_run(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def delete_runs_tagged(self, parent_id: str, tag: str, values: list[str]) -> None:
        """Remove the runs a killed worker left unfinished (ended KILLED), so each seed keeps exactly one run."""
        if not values:
            return
        experiment_id = self._experiment_of(parent_id)
        for value in values:
            for run in self.client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'"):
                self.client.set_terminated(run.info.run_id, "KILLED")
                self.client.delete_run(run.info.run_id)

    def end_runs_tagged(self, parent_id: str, tag: str, values: list[str], status: str) -> None:
        """End the runs a killed worker left RUNNING (a trial's attempt stays, as the history of its slot)."""
        if not values:
            return
        experiment_id = self._experiment_of(parent_id)
        for value in values:
            for run in self.client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'"):
                self.client.set_terminated(run.info.run_id, status)

    def _experiment_of(self, run_id: str) -> str:
        if run_id not in self._experiments:
            self._experiments[run_id] = self.client.get_run(run_id).info.experiment_id
        return self._experiments[run_id]

    @contextlib.contextmanager
    def parent_run(self, experiment: str, run_name: str, params: dict[str, Any]) -> Iterator[str]:
        experiment_id = self._experiment(experiment)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_params(_flat(params))
            yield run.info.run_id

    @contextlib.contextmanager
    def child_run(self, run_name: str, params: dict[str, Any], parent: str | None = None,
                  tags: dict[str, str] | None = None) -> Iterator[str]:
        """A run nested under `parent`, or else under this process's active run."""
        if parent is None:
            parent = mlflow.active_run().info.run_id
        # Without the parent's experiment id MLflow files a nested run under "Default".
        with mlflow.start_run(experiment_id=self._experiment_of(parent), run_name=run_name,
                              parent_run_id=parent, nested=mlflow.active_run() is not None, tags=tags) as run:
            mlflow.log_params(_flat(params))
            yield run.info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)

    def log_dict(self, payload: dict[str, Any], artifact_file: str, run_id: str | None = None) -> None:
        if run_id is None:
            mlflow.log_dict(payload, artifact_file)
        else:
            self.client.log_dict(run_id, payload, artifact_file)

    def log_artifact(self, path: Path, run_id: str | None = None, artifact_path: str | None = None) -> None:
        """To the active run, or to the run given (a parent run after it has ended); in `artifact_path`, a
        folder of the run's artifacts, if given."""
        if run_id is None:
            mlflow.log_artifact(str(path), artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_params_once(self, run_id: str, params: dict[str, Any]) -> None:
        """Params of a run that need not be active. MLflow never changes a param: one the run holds with another
        value (a later, larger trial budget tuned the same study, under the same parent run, to another
        configuration) keeps its first value, and a warning says so."""
        flat = _flat(params)
        for attempt in range(LOG_ATTEMPTS):
            held = self.client.get_run(run_id).data.params
            new = {key: value for key, value in flat.items() if key not in held}
            if not new:
                break
            try:
                self.client.log_batch(run_id, params=[Param(key, value) for key, value in new.items()])
            except MlflowException:
                # Workers of one sweep reach the parent run at once: another may have written some of these keys
                # between our read and our write, and the store then refuses the whole batch. Read again and write
                # what is still missing; a refusal that persists is raised.
                if attempt == LOG_ATTEMPTS - 1:
                    raise
            else:
                held = held | new
                break
        changed = sorted(key for key, value in flat.items() if held.get(key, value) != value)
        if changed:
            log.warning("MLflow run %s keeps its earlier %s (params cannot change); the current values are in "
                        "best_hparams.json and the seed runs' params", run_id,
                        ", ".join(f"{key}={held[key]}" for key in changed))

    def set_run_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Tags of a run that need not be active (a parent run any worker may tag)."""
        for key, value in tags.items():
            for attempt in range(LOG_ATTEMPTS):
                try:
                    self.client.set_tag(run_id, key, str(value))
                    break
                except MlflowException:
                    # The sqlite store looks a tag up, then inserts it: a worker tagging the same parent run
                    # between the two makes the insert break the UNIQUE constraint. The tag then exists, and
                    # the next attempt updates it; a refusal that persists is raised.
                    if attempt == LOG_ATTEMPTS - 1:
                        raise

    def log_run_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.client.log_metric(run_id, key, float(value))

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
