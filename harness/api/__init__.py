"""The interface that methods, tasks and plugins build on; it imports nothing else of the harness.

    from harness.api import Method, Requirements, Task, METHODS, TASKS
    from harness.api import ModalityEncoders, projection_head, nt_xent, gather

Names resolve lazily (PEP 562), so `import harness.api.space` loads no torch. Each also stays importable
from the module it lives in (`harness.api.method`, ...), and the pre-0.2 paths `harness.method`,
`harness.task`, `harness.space`, `harness.registry`, `harness.errors` and `harness.catalog` still work.

The building blocks the built-in methods share (encoders by modality, projection heads, the standard
contrastive losses) live in `methods/common/`, the library shipped beside the harness, and are named here
by their module path, as the registries name the built-in tables of `methods` and `tasks`: one home each,
imported on first use, so a plugin needs no import path but this one.
"""

from __future__ import annotations

import importlib
from typing import Any

_ENCODERS, _LOSSES = "methods.common.encoders", "methods.common.losses"
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
    "gather": "distributed",
    # The method author's building blocks (methods/common): a dotted value is a module path of its own.
    "ModalityEncoders": _ENCODERS, "build_encoder": _ENCODERS, "encoder_family": _ENCODERS, "mlp": _ENCODERS,
    "projection_head": _ENCODERS,
    "ProjectedModalities": "methods.common.projected",
    "image_modalities": "methods.common.vision_text",
    "nt_xent": _LOSSES, "nt_xent_logits": _LOSSES, "symmetric_info_nce": _LOSSES, "supcon": _LOSSES,
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'harness.api' has no attribute '{name}'")
    home = _HOMES[name]
    return getattr(importlib.import_module(home if "." in home else f"harness.api.{home}"), name)
