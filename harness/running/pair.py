"""One (task, method) pair, resolved and checked before a run: its hyperparameters, its data, or why it
cannot run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.api.errors import HarnessError
from harness.api.method import Method
from harness.api.space import Param
from harness.api.task import Task
from harness.results.identity import run_identity
from harness.results.records import Record
from harness.running import provenance, request


@dataclass
class Pair:
    """One task and one method, resolved and checked, ready to run."""

    task: Task
    method_cls: type[Method]

    @property
    def key(self) -> str:
        return f"{self.task.name}/{self.method_cls.name}"


def resolve_hyperparameters(pair: Pair, overrides: dict[str, str]) -> tuple[dict[str, Param], dict[str, Any]]:
    """The space still to tune, and every value fixed by defaults or --set (harness.running.request)."""
    return request.hyperparameters(pair.method_cls, pair.task.default_batch_size, overrides)


def not_applicable_record(task: Task, method_cls: type[Method], reason: str) -> Record:
    method = {"name": method_cls.name, "display_name": method_cls.display_name, "version": method_cls.version}
    return Record(task=task.identity() | {"provenance": provenance.describe(type(task).__module__)}, seed=None,
                  status="n/a", reason=reason, identity=run_identity(task.identity(), method, {}, {}),
                  method=method | {"provenance": provenance.describe(method_cls.__module__)})


def check_data(task: Task) -> None:
    if task.data_present():
        return
    files = task.source.files
    if task.data_dir is None:
        raise HarnessError(f"task {task.name}: data not found (no --data-dir given); expected {', '.join(files)} "
                           f"there. {task.source.instructions}")
    missing = [str(task.data_dir / f) for f in files if not (task.data_dir / f).exists()]
    raise HarnessError(f"task {task.name}: data not found: {', '.join(missing)} missing; expected "
                       f"{', '.join(files)} under {task.data_dir}. {task.source.instructions}")
