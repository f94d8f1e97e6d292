"""The interface that methods, tasks and plugins build on; it imports nothing else of the harness.

    from harness.api import Method, Requirements, Task, METHODS, TASKS

Names resolve lazily (PEP 562), so `import harness.api.space` loads no torch. Each also stays importable
from the module it lives in (`harness.api.method`, ...), and the pre-0.2 paths `harness.method`,
`harness.task`, `harness.space`, `harness.registry`, `harness.errors` and `harness.catalog` still work.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "METHODS": "catalog", "TASKS": "catalog",
    "HarnessError": "errors",
    "Method": "method", "Requirements": "method", "InputModalities": "method", "Auxiliary": "method",
    "AuditData": "method",
    "AssumptionCheck": "checks", "check_state": "checks",
    "Registry": "registry",
    "Float": "space", "Int": "space", "Choice": "space", "Interval": "space", "OneOf": "space",
    "POSITIVE": "space", "NON_NEGATIVE": "space", "SIZE": "space", "parse_overrides": "space",
    "Task": "task", "Modality": "task", "DataSource": "task", "Batch": "task", "Split": "task",
    "TensorSplit": "task", "TaskData": "task",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'harness.api' has no attribute '{name}'")
    return getattr(importlib.import_module(f"harness.api.{_HOMES[name]}"), name)
