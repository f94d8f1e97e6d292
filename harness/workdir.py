"""Where a run's working stores live in its work folder (`--workdir`, default .harness/). Imports nothing heavy."""

from __future__ import annotations

from pathlib import Path


def default_uri(workdir: Path) -> str:
    """The MLflow store a run tracks to when no --tracking-uri is given."""
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"
