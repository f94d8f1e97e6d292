"""When a command may replace a record, and where a replaced record is kept. Imports no torch.

Records are users' data, published ones above all. This is the one place that decides which of a
pair's record files a request may not take as its own: those made under another run identity
(`harness.results.identity.differences` is not empty) and, for a run of N seeds, those of seeds N
and beyond. No command replaces or removes them unless --force says so; then each is first moved
into `replaced/` beside it, under a name no earlier kept file has (`seed0.20261207T131500.123456Z.json`).
Nothing reads from there: records are read from `records/TASK/METHOD/*.json` and histories from
`history/TASK/*.json`, one level above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.api.errors import HarnessError
from harness.results.identity import differences
from harness.results.publishing.history import history_path
from harness.results.records import Record, read_record, record_path, write_record

REPLACED_DIR = "replaced"


@dataclass
class Judged:
    """A pair's seed records in one folder, judged against a requested identity."""

    key: str  # "task/method"
    folder: Path  # records/TASK/METHOD
    history: Path | None = None  # the pair's history file (harness.results.publishing.history), if it has one
    standing: set[int] = field(default_factory=set)  # seeds whose records stand for the request
    other: dict[Path, list[str]] = field(default_factory=dict)  # the records that do not -> how each differs
    seen: dict[Path, Record] = field(default_factory=dict)  # each of those records as judged

    def what(self) -> str:
        """How the others differ, each difference said once: "recorded with 6 epochs, asked for 2"."""
        return "; ".join(dict.fromkeys(d for found in self.other.values() for d in found))

    def set_aside(self) -> list[Path]:
        """Keep the records made otherwise in replaced/, and the pair's history, whose curves are theirs. A file
        another worker has since rewritten is no longer the one judged, and stays."""
        paths = [p for p in self.other if p.exists() and read_record(p) == self.seen.get(p)]
        if paths and self.history:
            paths.append(self.history)
        return [kept for kept in map(set_aside, paths) if kept is not None]

    def refusal(self, fixes: str) -> HarnessError:
        return HarnessError(f"{self.key}: {len(self.other)} record(s) in {self.folder} were made under another "
                            f"identity ({self.what()}); a command replaces them only when told to: {fixes}")


def judge(results: Path, identity: dict[str, Any], seeds: int | None = None) -> Judged:
    """The pair's seed records that stand for `identity`, and those made otherwise (with `seeds`, also any
    of a seed beyond that count)."""
    task, method = identity["task"]["name"], identity["method"]["name"]
    judged = Judged(f"{task}/{method}", record_path(results, task, method, 0).parent,
                    history_path(results, task, method))
    for path in sorted(judged.folder.glob("seed*.json")):
        record = read_record(path)
        found = [str(d) for d in differences(record.identity, identity, record.hparams)]
        if seeds is not None and (record.seed is None or record.seed >= seeds) and not found:
            found = [f"seed {record.seed} beyond the {seeds} asked for"]
        if found:
            judged.other[path], judged.seen[path] = found, record
        else:
            judged.standing.add(record.seed)
    return judged


def made_otherwise(path: Path, identity: dict[str, Any]) -> list[str]:
    """How the record at `path` differs from `identity`; empty when it stands for it or does not exist."""
    if not path.exists():
        return []
    record = read_record(path)
    return [str(d) for d in differences(record.identity, identity, record.hparams)]


def set_aside(path: Path) -> Path | None:
    """Move `path` into `replaced/` beside it, named by the time (UTC); the kept path, or None if there was
    no file (none was written, or another worker moved it first)."""
    if not Path(path).exists():
        return None
    kept = Path(path).parent / REPLACED_DIR
    kept.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    name, suffix = Path(path).stem, Path(path).suffix
    for attempt in range(1000):
        target = kept / f"{name}.{stamp}{f'-{attempt}' if attempt else ''}{suffix}"
        try:
            # Claimed first, as an empty file created only if absent, so no earlier kept file is ever
            # overwritten; then the record is renamed over the claim (atomic: it is never lost between).
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        try:
            os.replace(path, target)
        except FileNotFoundError:
            target.unlink()
            return None
        return target
    raise HarnessError(f"{kept}: cannot find a free name to keep {Path(path).name} under; clear that folder")


def write_keeping(root: Path, record: Record) -> Path:
    """Write a record a command trained; another record already at its path is kept in replaced/ first."""
    path = record_path(root, record.task["name"], record.method["name"], record.seed)
    if path.exists() and read_record(path) != record:
        set_aside(path)
    return write_record(root, record)
