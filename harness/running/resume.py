"""Which seeds of a (task, method) pair a run trains, given the records already written.

A seed's record is reused only when its identity equals the requested one
(`harness.results.identity`). Records made under another identity, and records
of seeds beyond the requested count, are never replaced or removed unless asked
(`harness.results.replacing` decides which they are): by default the run refuses,
naming the pair, the folder and what differs, before anything is trained; with
`force` it moves them (and the pair's history, whose curves are theirs) into
`replaced/` beside them and retrains every seed; with `keep_old` the pair keeps
all of its records and trains nothing, and says so. This module imports no torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results.replacing import Judged, judge

log = logging.getLogger(__name__)

RUN_FIXES = ("--force retrains them and keeps the old records in replaced/ beside them, --keep-old keeps them and "
             "trains nothing for this pair, or give another --results")


@dataclass
class ResumePlan:
    key: str  # "task/method"
    train: list[int]  # seeds to train (and record)
    replaced: Judged | None = None  # with --force: its records made otherwise go to replaced/ before training
    note: str | None = None  # one line on records made under another identity

    def apply(self) -> None:
        """Say what was decided, and keep the records it replaces (and their history) in replaced/."""
        if self.note:
            log.warning(self.note)
        if self.replaced is not None:
            self.replaced.set_aside()


def plan_resume(results: Path, identity: dict[str, Any], *, force: bool = False, keep_old: bool = False) -> ResumePlan:
    seeds = identity["protocol"]["seeds"]
    judged = judge(results, identity, seeds)
    if judged.other and keep_old:
        note = (f"{judged.key}: keeping {len(judged.other)} seed record(s) made under another identity "
                f"({judged.what()}), as --keep-old asks; nothing trained for this pair")
        return ResumePlan(judged.key, [], note=note)
    if judged.other and not force:
        raise judged.refusal(RUN_FIXES)
    train = list(range(seeds)) if force else [s for s in range(seeds) if s not in judged.standing]
    if not judged.other:
        return ResumePlan(judged.key, train)
    note = (f"{judged.key}: {len(judged.other)} seed record(s) made under another identity ({judged.what()}); "
            f"retraining, as --force asks; the old records are kept in {judged.folder / 'replaced'}/")
    return ResumePlan(judged.key, train, replaced=judged, note=note)
