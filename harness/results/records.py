"""Result records: one JSON file per (task, method, seed), the published truth.

This module imports no torch, so the leaderboard can read records anywhere.

Schema versions. A record of an older schema is read through the migrations
below, one version at a time, and rewritten in the current schema only when
its seed is trained again:

- 1 -> 2: schema 2 adds `identity` (see `harness.results.identity`). The migration
  rebuilds it from the record's own task, method and protocol fields. It
  cannot know which hyperparameters were fixed (defaults or --set) and which
  tuned, so it sets `fixed` to None; such a record is reused when every value
  a request fixes equals the value the record holds.
- 2 -> 3: schema 3 adds `encoder`, the digest naming the trained encoder (see
  `harness.results.encoders`), computed when the seed is trained. The
  migration leaves it empty: which records share an encoder depends on what
  the code says of the method and task, so readers compute it then
  (`harness.results.encoders.encoder_of`).
- 3 -> 4: schema 4 adds `notes`, the facts the method stated about the run (`Method.record_notes`: what a
  guide was trained on, ...). The migration leaves it empty: a record made before said none.

A record of a newer schema than this harness knows is refused with one line
saying to upgrade the harness or regenerate the record.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness.api.errors import HarnessError
from harness.results.identity import run_identity

SCHEMA = 4


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
    # What must be equal for this record to stand for a requested run (harness.results.identity.run_identity).
    identity: dict[str, Any] = field(default_factory=dict)
    # The trained encoder's digest (harness.results.encoders.encoder_digest); records sharing it share the
    # encoder. Empty in a record made before schema 3: read it through encoders.encoder_of.
    encoder: str = ""
    # Facts the method stated about this run (Method.record_notes): name -> one sentence; not checks.
    notes: dict[str, str] = field(default_factory=dict)
    schema: int = SCHEMA


def record_path(root: Path, task: str, method: str, seed: int | None) -> Path:
    leaf = "not-applicable.json" if seed is None else f"seed{seed}.json"
    return Path(root) / "records" / task / method / leaf


def write_record(root: Path, record: Record) -> Path:
    """Write atomically, so an interrupted run never leaves half a record behind; a file that already holds
    this record is left untouched (a rerun's n/a record, a worker's copy of another's), so a folder whose
    records a command only confirms does not change."""
    path = record_path(root, record.task["name"], record.method["name"], record.seed)
    text = json.dumps(asdict(record), indent=2, sort_keys=True) + "\n"
    if not _holds(path, text):
        replace_atomically(path, text)
    return path


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_bytes() == text.encode()
    except OSError:  # absent (or unreadable: then writing says why)
        return False


def replace_atomically(path: Path, text: str) -> None:
    """`path` holds `text` or what it held before, never a part; any number of processes may write it at once."""
    def write(tmp: Path) -> None:
        with open(tmp, "x") as out:
            out.write(text)

    write_atomically(path, write)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write` fills a temporary file beside `path`, which then replaces `path` whole (a record, a checkpoint,
    a kept encoder): a reader finds the old file or the new one, never a part.

    Each writer goes through a temporary name of its own in the same folder (a shared name let one
    writer's rename take the file another was about to rename: FileNotFoundError), then renames it
    over `path`, which is atomic on one file system: the last rename wins, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are private (0600), and a record on a shared disk must stay readable (umask).
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_records(root: Path) -> Iterator[Record]:
    for path in sorted((Path(root) / "records").glob("*/*/*.json")):
        yield read_record(path)


def read_record(path: Path) -> Record:
    return Record(**migrate(_checked_fields(Path(path)), path))


# The types each field may hold, as json.loads gives them back.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "task": (dict,), "method": (dict,), "seed": (int, type(None)), "status": (str,), "hparams": (dict,),
    "protocol": (dict,), "metrics": (dict,), "environment": (dict,), "wall_time_s": (int, float),
    "peak_memory_mb": (int, float), "finished_at": (str,), "reason": (str,), "mlflow_run_id": (str, type(None)),
    "checks": (dict,), "identity": (dict,), "encoder": (str,), "notes": (dict,), "schema": (int,),
}
_REQUIRED = {f.name for f in fields(Record) if f.default is MISSING and f.default_factory is MISSING} | {"schema"}


def _checked_fields(path: Path) -> dict[str, Any]:
    """A record file's fields, or one line naming the file, what is wrong with it and the fix."""
    fix = "regenerate it (`harness run ... --force`) or delete the file"
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read this record ({exc.strerror}); fix its permissions or delete it") \
            from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise HarnessError(f"{path}: not valid JSON{where} (truncated or damaged); {fix}") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a record is a JSON object, not a {type(data).__name__}; {fix}")
    missing = sorted(_REQUIRED - set(data))
    unknown = sorted(set(data) - {f.name for f in fields(Record)})
    if missing or unknown:
        problem = f"lacks field(s) {', '.join(missing)}" if missing else f"has unknown field(s) {', '.join(unknown)}"
        raise HarnessError(f"{path}: the record {problem}; {fix}")
    for name, value, expected in _typed_entries(data):
        if not (bool in expected if isinstance(value, bool) else isinstance(value, expected)):
            found = "nothing" if value is MISSING else f"a {type(value).__name__}"
            raise HarnessError(f"{path}: record field '{name}' holds {found}; {fix}")
    return data


def _typed_entries(data: dict[str, Any]) -> Iterator[tuple[str, Any, tuple[type, ...]]]:
    """(name, value, accepted types): the fields first, then what readers take from inside them.

    Lazy, so an entry inside a field is only looked at once that field's own type has passed.
    """
    for name, value in data.items():
        if name in _FIELD_TYPES:
            yield name, value, _FIELD_TYPES[name]
    for part, key in (("task", "name"), ("method", "name"), ("method", "display_name")):
        yield f"{part}.{key}", data[part].get(key, MISSING), (str,)
    for key, value in data.get("metrics", {}).items():
        yield f"metrics.{key}", value, (int, float)
    for key, value in data.get("checks", {}).items():
        yield f"checks.{key}", value, (dict,)
        yield f"checks.{key}.held", value.get("held", MISSING), (bool,)
        yield f"checks.{key}.measurable", value.get("measurable", True), (bool,)  # absent before the third state
    for key, value in data.get("notes", {}).items():
        yield f"notes.{key}", value, (str,)


def migrate(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The record's fields in the current schema, through each migration from its own."""
    schema = data.get("schema")
    if schema not in MIGRATIONS and schema != SCHEMA:
        raise HarnessError(f"{path}: record schema {schema} is not one this harness reads (1 to {SCHEMA}); "
                         f"upgrade the harness, or regenerate the record with `harness run ... --force`")
    while data["schema"] != SCHEMA:
        data = MIGRATIONS[data["schema"]](data)
    return data


def _schema_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    identity = run_identity(data["task"], data["method"], data.get("protocol") or {}, fixed=None)
    return data | {"identity": identity, "schema": 2}


def _schema_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    return data | {"encoder": "", "schema": 3}


def _schema_3_to_4(data: dict[str, Any]) -> dict[str, Any]:
    return data | {"notes": {}, "schema": 4}


# schema -> the function that lifts a record of it to the next
MIGRATIONS = {1: _schema_1_to_2, 2: _schema_2_to_3, 3: _schema_3_to_4}


def mlflow_server(tracking_uri: str) -> dict[str, str]:
    """What a record's `environment` keeps of the MLflow store its run tracked to: an http(s) server's address,
    without any user name or password in it, so a published page can link the run; nothing for a local store,
    whose path means nothing on another machine."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return {}
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return {"mlflow_server": urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))}


def run_page(server: object, run_id: str) -> str | None:
    """The MLflow UI's page of a run on `server` (its direct route, /#/runs/ID, which needs no experiment id)."""
    if not isinstance(server, str) or not server.startswith(("http://", "https://")):
        return None
    return f"{server.rstrip('/')}/#/runs/{run_id}"


def has_record(root: Path, task: str, method: str, seed: int) -> bool:
    return record_path(root, task, method, seed).exists()
