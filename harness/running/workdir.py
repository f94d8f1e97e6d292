"""Where a run's working stores live (`--workdir`, default .harness/) and this machine's cache.

Imports nothing heavy."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "HARNESS_CACHE_DIR"


def default_uri(workdir: Path) -> str:
    """The MLflow store a run tracks to when no --tracking-uri is given."""
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def cache_dir() -> Path:
    """What this machine keeps between runs and checkouts (the metadata index, an empty MLflow store):
    $HARNESS_CACHE_DIR, else ~/.cache/contrastive-harness. Deleting it only costs rebuilding."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "contrastive-harness"
