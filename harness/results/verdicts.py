"""Claims -> verdicts, from the records and nothing typed by hand. Imports no torch.

Every figure of a verdict is computed here when the page is generated: each comparison's paired
difference and 95% t interval (`harness.results.stats`), its p value Holm-corrected over the claim's
family, the distinct trained encoders (`harness.results.encoders`) and the records' commits.
`verdict` is the only place a verdict is decided; `RULES` says in words what it does.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.api.checks import check_state
from harness.results import stats
from harness.results.claims import Claim
from harness.results.encoders import EncoderFacts, encoder_of
from harness.results.identity import task_setting
from harness.results.records import Record, read_records

SUPPORTED, NOT_SUPPORTED, CONTRADICTED = "supported", "not supported", "contradicted"
INSUFFICIENT, NOT_TESTED = "insufficient evidence", "not tested"
MIN_PAIRED_SEEDS = 2  # a t interval needs a spread
ALPHA = stats.ALPHA
NOT_RECORDED = "not recorded"
DIAGNOSTICS_DIR = "diagnostics"

# The rules, first match wins; `verdict` implements exactly these, in this order.
RULES = [
    (NOT_TESTED, "a row the claim compares has no record on any of its tasks; the verdict says what would "
                 "test it."),
    (INSUFFICIENT, "a compared row has fewer distinct trained encoders than the claim's minimum, or a comparison "
                   "has fewer than two paired seeds. Records that share a trained encoder count once: the same "
                   "method, version, hyperparameters, seed, epochs and batch size on the same task or, for a "
                   "method that never trains on labels, on tasks that declare the same inputs and views "
                   "(`Task.inputs_of`)."),
    (CONTRADICTED, f"a comparison differs in the opposite direction at Holm-corrected p < {ALPHA} (a two-sided "
                   "paired t-test over matched seeds, corrected over every comparison of the claim's family), "
                   "or a distinct encoder violated a check the claim rests on."),
    (SUPPORTED, f"every comparison differs in the claimed direction at Holm-corrected p < {ALPHA}, or every "
                "distinct encoder's check held."),
    (NOT_SUPPORTED, "otherwise: decidable, yet a difference is within what the seeds explain, or a check "
                    "could not be measured or was not recorded."),
]


@dataclass
class Comparison:
    task: str
    row: str  # table names
    other: str
    n: int  # paired seeds
    mean: float  # row minus other, in the score's own units (fractions, or bits)
    low: float
    high: float
    p: float  # two-sided, uncorrected; nan when untestable
    unit: str  # "points" (fractions shown x100) or "bits"
    family: str
    adjusted_p: float = math.nan


@dataclass
class Outcome:
    claim: Claim
    verdict: str = NOT_TESTED
    why: str = ""
    comparisons: list[Comparison] = field(default_factory=list)
    encoders: dict[str, int] = field(default_factory=dict)  # compared row (table name) -> distinct encoders
    records: int = 0
    commits: list[str] = field(default_factory=list)
    checks: Counter | None = None  # check state -> distinct (encoder, check) pairs


def evaluate(root: Path, claims: list[Claim], facts: EncoderFacts) -> list[Outcome]:
    """One outcome per claim, its comparisons Holm-corrected within their families, its verdict decided."""
    records = [r for r in read_records(root) if r.status == "ok"]
    outcomes = []
    for claim in claims:
        measure = {"paired": _paired, "check": _checks, "diagnostic": _diagnostic}[claim.kind]
        outcomes.append(measure(Path(root), claim, records, facts))
    _holm_by_family([c for o in outcomes for c in o.comparisons])
    for outcome in outcomes:
        outcome.verdict, outcome.why = verdict(outcome)
    return outcomes


def verdict(outcome: Outcome) -> tuple[str, str]:
    """The verdict and why, by RULES in their order."""
    claim, comparisons = outcome.claim, outcome.comparisons
    absent = [row for row, count in outcome.encoders.items() if count == 0]
    if absent:
        return NOT_TESTED, (f"no record of {', '.join(absent)} on {', '.join(claim.test['tasks'])}"
                            + (f": needs {claim.needs}" if claim.needs else ""))
    short = {row: count for row, count in outcome.encoders.items() if count < claim.min_encoders}
    if short:
        row, count = min(short.items(), key=lambda item: item[1])
        return INSUFFICIENT, f"{row}: {count} distinct encoder(s), the claim needs {claim.min_encoders}"
    unpaired = [c for c in comparisons if c.n < MIN_PAIRED_SEEDS]
    if unpaired:
        return INSUFFICIENT, f"{unpaired[0].task}: {unpaired[0].n} paired seed(s) with {unpaired[0].other}"
    if outcome.checks is not None:
        total = sum(outcome.checks.values())
        if outcome.checks["violated"]:
            return CONTRADICTED, f"violated on {outcome.checks['violated']} of {total} distinct encoder-checks"
        if outcome.checks["held"] == total:
            return SUPPORTED, f"held on all {total} distinct encoder-checks"
        return NOT_SUPPORTED, f"held on {outcome.checks['held']} of {total}; the rest not measurable or not recorded"
    sign = {"above": 1, "below": -1, "differs": 0}[claim.test.get("direction", "above")]
    significant = [c for c in comparisons if c.adjusted_p < ALPHA]
    against = [c for c in significant if sign * c.mean < 0]
    if against:
        return CONTRADICTED, f"{against[0].task}: {against[0].row} is {_opposite(claim)} {against[0].other}"
    if len(significant) == len(comparisons):
        return SUPPORTED, f"all {len(comparisons)} comparison(s) in the claimed direction"
    return NOT_SUPPORTED, f"{len(comparisons) - len(significant)} of {len(comparisons)} comparison(s) within noise"


def _opposite(claim: Claim) -> str:
    return "below" if claim.test.get("direction", "above") == "above" else "above"  # "differs" has no opposite


def _holm_by_family(comparisons: list[Comparison]) -> None:
    families: dict[str, list[Comparison]] = {}
    for comparison in comparisons:
        families.setdefault(comparison.family, []).append(comparison)
    for members in families.values():
        for comparison, adjusted in zip(members, stats.holm([c.p for c in members])):
            comparison.adjusted_p = adjusted


def _of(records: list[Record], method: str, tasks: list[str]) -> list[Record]:
    return [r for r in records if r.method["name"] == method and r.task["name"] in tasks]


def _display(records: list[Record], method: str) -> str:
    return next((r.method.get("display_name", method) for r in records if r.method["name"] == method), method)


def _encoders(found: list[Record], facts: EncoderFacts) -> int:
    return len({encoder_of(r, facts) for r in found})


def _commits(found: list[Record]) -> list[str]:
    return sorted({str(r.environment.get("git_commit")) for r in found if r.environment.get("git_commit")})


def _compare(task: str, row: str, other: str, a: dict, b: dict, unit: str, family: str) -> Comparison:
    """Row minus other over the seeds both have: the mean, its t interval and the paired t-test's p."""
    seeds = sorted(set(a) & set(b))
    differences = [a[s] - b[s] for s in seeds]
    test = stats.paired_test(a, b)
    interval = stats.t_interval(differences) if seeds else stats.Interval(math.nan, math.nan, math.nan, 0)
    return Comparison(task, row, other, len(seeds), interval.mean, interval.low, interval.high, test.p_value,
                      unit, family)


def _paired(root: Path, claim: Claim, records: list[Record], facts: EncoderFacts) -> Outcome:
    """Row minus each compared row per task; with `versus_task`, the compared rows are read on that task."""
    tasks, row, versus_task = claim.test["tasks"], claim.test["row"], claim.test.get("versus_task")
    outcome = Outcome(claim)
    found = _of(records, row, tasks)
    outcome.encoders[_display(records, row)] = _encoders(found, facts)
    used = list(found)
    for other in claim.compared:
        theirs = _of(records, other, [versus_task] if versus_task else tasks)
        outcome.encoders[_label(records, other, versus_task)] = _encoders(theirs, facts)
        used += theirs
    score = claim.test.get("score")
    for task in tasks:
        # On one task, seeds pair only on the same version and setting of it; across tasks the setting differs.
        mine = _scores(_of(records, row, [task]), score, with_setting=not versus_task)
        for other in claim.compared:
            theirs = _scores(_of(records, other, [versus_task or task]), score, with_setting=not versus_task)
            outcome.comparisons.append(_compare(task, _display(records, row), _label(records, other, versus_task),
                                                mine, theirs, "points", claim.family))
    outcome.records, outcome.commits = len(used), _commits(used)
    return outcome


def _label(records: list[Record], method: str, task: str | None) -> str:
    return _display(records, method) + (f" on {task}" if task else "")


def _scores(found: list[Record], score: str | None, with_setting: bool = True) -> dict[tuple, float]:
    """(seed, epochs, batch size[, the task's version and parameters]) -> score: seeds pair only where both
    trained alike (as harness.results.paired)."""
    scores = {}
    for r in found:
        value = r.metrics.get(score or r.task.get("main_score", "test_acc"))
        if value is not None and not math.isnan(value):
            key = (r.seed, r.protocol.get("epochs"), r.protocol.get("batch_size"))
            scores[key + (task_setting(r.task),) if with_setting else key] = float(value)
    return scores


def _checks(root: Path, claim: Claim, records: list[Record], facts: EncoderFacts) -> Outcome:
    """Each distinct (encoder, check) once: records of one trained encoder carry the same audit."""
    outcome = Outcome(claim)
    states: dict[tuple, str] = {}
    used = []
    for method in claim.test["methods"]:
        found = _of(records, method, claim.test["tasks"])
        outcome.encoders[_display(records, method)] = _encoders(found, facts)
        used += found
        for r in found:
            for name in claim.test["checks"]:
                state = check_state(r.checks[name]) if name in r.checks else NOT_RECORDED
                states.setdefault((encoder_of(r, facts), name), state)
    outcome.checks = Counter(states.values())
    outcome.records, outcome.commits = len(used), _commits(used)
    return outcome


def _diagnostic(root: Path, claim: Claim, records: list[Record], facts: EncoderFacts) -> Outcome:
    """MI estimates in bits, one per diagnosed seed (harness diagnose); each seed is one encoder."""
    test = claim.test
    task = test["tasks"][0]
    sides = {test["row"]: test["part"], test["versus"]: test["versus_part"]}
    outcome = Outcome(claim)
    bits: dict[str, dict[int, float]] = {method: {} for method in sides}
    sources = []
    for path in sorted((root / DIAGNOSTICS_DIR / task).glob("*.json")):
        found = json.loads(path.read_text())
        method = found["method"]["name"]
        for estimate in found["estimates_bits"] if method in sides else []:
            if estimate["part"] == sides[method] and estimate["extra"] == test["extra"]:
                bits[method][found["protocol"]["seed"]] = estimate["bits"]
                sources.append(found["protocol"].get("hparams_from"))
    for method in sides:
        outcome.encoders[_display(records, method)] = len(bits[method])
    if bits[test["row"]]:
        outcome.comparisons.append(_compare(task, f"{_display(records, test['row'])} {test['part']}",
                                            f"{_display(records, test['versus'])} {test['versus_part']}",
                                            bits[test["row"]], bits[test["versus"]], "bits", claim.family))
    used = [r for r in records if any(source and f"records/{r.task['name']}/{r.method['name']}/seed{r.seed}.json"
                                      == source for source in sources)]
    outcome.records, outcome.commits = len(used), _commits(used)
    return outcome
