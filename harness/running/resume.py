"""Which seeds of a (task, method) pair a run trains, given the records already written.

A seed's record is reused only when its identity equals the requested one
(`harness.results.identity`). Records made under another identity are, by default,
retrained and replaced, and records of seeds beyond the requested count are
removed, so a leaderboard cell never mixes identities; with `keep_old` the
pair keeps all of its records and trains nothing. Either way the command says
so in one line per pair naming what differs. This module imports no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results.identity import differences
from harness.results.records import read_record, record_path

log = logging.getLogger(__name__)


@dataclass
class ResumePlan:
    key: str  # "task/method"
    train: list[int]  # seeds to train (and record, replacing what is there)
    remove: list[Path] = field(default_factory=list)  # stale records of seeds beyond the requested count
    note: str | None = None  # one line on records made under another identity

    def apply(self) -> None:
        """Say what was decided and remove the stale records it names."""
        if self.note:
            log.warning(self.note)
        for path in self.remove:
            path.unlink(missing_ok=True)


def plan_resume(results: Path, identity: dict[str, Any], *, force: bool = False, keep_old: bool = False) -> ResumePlan:
    task, method, seeds = identity["task"]["name"], identity["method"]["name"], identity["protocol"]["seeds"]
    key = f"{task}/{method}"
    folder = record_path(results, task, method, 0).parent
    stale: dict[int, list[str]] = {}
    beyond: list[Path] = []
    reusable: set[int] = set()
    for path in sorted(folder.glob("seed*.json")):
        record = read_record(path)
        found = [str(d) for d in differences(record.identity, identity, record.hparams)]
        if record.seed is None or record.seed >= seeds:
            beyond.append(path)
            stale[record.seed] = found
        elif found:
            stale[record.seed] = found
        else:
            reusable.add(record.seed)
    what = "; ".join(dict.fromkeys(d for found in stale.values() for d in found))
    if stale and keep_old:
        note = (f"{key}: keeping {len(stale)} seed record(s) made under another identity ({what}), "
                f"as --keep-old asks; nothing trained for this pair")
        return ResumePlan(key, [], note=note)
    train = list(range(seeds)) if force else [s for s in range(seeds) if s not in reusable]
    note = None
    if stale:
        note = (f"{key}: {len(stale)} seed record(s) made under another identity ({what}); "
                f"retraining and replacing them (--keep-old keeps them)")
    return ResumePlan(key, train, remove=beyond, note=note)
