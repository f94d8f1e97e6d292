"""The two registries. Built-in entries are the tables in the `methods` and
`tasks` packages; third-party packages add entries through entry points."""

from __future__ import annotations

import importlib

from harness.api.registry import Registry


def _builtin_table(package: str) -> dict[str, str]:
    return dict(importlib.import_module(package).BUILTIN)


METHODS = Registry("method", _builtin_table("methods"), entry_point_group="harness.methods")
TASKS = Registry("task", _builtin_table("tasks"), entry_point_group="harness.tasks")
