"""A cache of data fingerprints in the work folder, so deciding what to resume needs no data loaded.

A task's fingerprint is a hash of the data it loaded; computing it means
loading (and for generated tasks, generating) every split. The cache keys it
by the task's identity (name, version, parameters) and, for data read from
files, each file's path, size and modification time; for a folder, those of
the entries directly inside it (an image added to a class folder changes that
folder's time). A generated task is keyed by its identity alone: a change to
its generator must come with a new task version, as any change of behaviour
does. When a run loads the data anyway it recomputes the fingerprint and the
cache is corrected if it was wrong.

This module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.results.identity import plain

CACHE_FILE = "fingerprints.json"


def data_key(task: Mapping[str, Any], files: Iterable[Path] = ()) -> str:
    """What the fingerprint of this task's data depends on, as a digest."""
    identity = {"name": task["name"], "version": task.get("version"), "params": task.get("params") or {}}
    stats = [_stat(Path(path)) for path in files]
    return hashlib.sha256(json.dumps(plain({"task": identity, "files": stats}), sort_keys=True).encode()).hexdigest()


def source_key(task: Mapping[str, Any], source_kind: str, source_files: Iterable[str], data_dir: Path | None) -> str:
    """The key of a task's data: its identity and, for a task read from files, their sizes and times."""
    files = [Path(data_dir) / f for f in source_files] if source_kind == "files" and data_dir else []
    return data_key(task, files)


def cached(workdir: Path, key: str) -> str | None:
    return _read(workdir).get(key)


def remember(workdir: Path, key: str, fingerprint: str) -> None:
    """Store atomically: a concurrent reader sees the old file or the new one, never half of one."""
    entries = _read(workdir) | {key: fingerprint}
    path = Path(workdir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{CACHE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read(workdir: Path) -> dict[str, str]:
    path = Path(workdir) / CACHE_FILE
    try:
        entries = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # a cache: when missing or damaged, the data are fingerprinted again
    return entries if isinstance(entries, dict) else {}


def _stat(path: Path) -> list[Any]:
    if not path.exists():
        return [str(path), None]
    if path.is_dir():
        return [str(path), sorted(_entry(child) for child in os.scandir(path))]
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _entry(entry: os.DirEntry) -> tuple[str, int, int]:
    stat = entry.stat()
    return entry.name, stat.st_size, stat.st_mtime_ns
