"""Result records: one JSON file per (task, method, seed), the published truth.

This module imports no torch, so the leaderboard can read records anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1


@dataclass
class Record:
    task: dict[str, Any]  # name, version, suite, fingerprint, params
    method: dict[str, Any]  # name, display_name, version
    seed: int | None
    status: str  # "ok" or "n/a"
    hparams: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)  # epochs, trials, seeds, batch size
    metrics: dict[str, float] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)  # device, hardware, versions, git commit
    wall_time_s: float = 0.0
    peak_memory_mb: float = 0.0
    finished_at: str = ""
    reason: str = ""  # why a method is not applicable
    mlflow_run_id: str | None = None
    # Assumptions the number rests on, as the method checked them: name -> {held, detail, value}.
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    schema: int = SCHEMA


def record_path(root: Path, task: str, method: str, seed: int | None) -> Path:
    leaf = "not-applicable.json" if seed is None else f"seed{seed}.json"
    return Path(root) / "records" / task / method / leaf


def write_record(root: Path, record: Record) -> Path:
    """Write atomically, so an interrupted run never leaves half a record behind."""
    path = record_path(root, record.task["name"], record.method["name"], record.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_records(root: Path) -> Iterator[Record]:
    for path in sorted((Path(root) / "records").glob("*/*/*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            raise ValueError(f"{path}: record schema {data.get('schema')} is not {SCHEMA}; regenerate it")
        yield Record(**data)


def read_record(root: Path, task: str, method: str, seed: int) -> Record | None:
    path = record_path(root, task, method, seed)
    return Record(**json.loads(path.read_text())) if path.exists() else None


def has_record(root: Path, task: str, method: str, seed: int) -> bool:
    return record_path(root, task, method, seed).exists()
