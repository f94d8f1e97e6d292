"""Per-seed paired differences from a baseline method, with a t interval. Imports no torch.

The harness seeds every run of a seed alike (initial weights, data order and
augmentations), so a method's score minus the baseline's score on the same
task and seed removes the seed-to-seed noise both share. Seeds pair only
where both records trained with the same epochs and batch size.
"""

from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from harness.results import stats
from harness.results.overlay import counterpart

CONFIDENCE = 0.95


def paired_differences(results: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (task, method other than `baseline`, by table name): n, mean difference and its interval.

    `results` is the leaderboard's tidy table (harness.results.leaderboard.load_results); scores are fractions.
    A row's baseline is that of its own folder where that folder has it, else the published one's.
    """
    ok = results[(results.status == "ok") & results.score.notna()]
    keys = ["task", "seed", "epochs", "batch_size"]
    pieces = []
    for (task, source), rows in ok[ok.name != baseline].groupby(["task", "source"]):
        base = counterpart(results, baseline, task, source)  # the baseline of the row's own folder, if it has one
        pieces.append(rows.merge(base[keys + ["score"]].rename(columns={"score": "baseline_score"}), on=keys))
    paired = pd.concat(pieces) if pieces else ok.assign(baseline_score=ok.score).iloc[:0]
    rows = []
    for (task, method), group in paired.groupby(["task", "display"], sort=True):
        diff = group.score - group.baseline_score
        low, high = interval(diff)
        rows.append({"task": task, "method": method, "n": len(diff), "mean": diff.mean(), "low": low,
                     "high": high, "check_failed": bool(group.check_failed.any()),
                     "per_seed": dict(zip(group.seed.astype(int), diff))})
    return pd.DataFrame(rows, columns=["task", "method", "n", "mean", "low", "high", "check_failed", "per_seed"])


def interval(diff: pd.Series) -> tuple[float, float]:
    """The two-sided t interval of the mean difference; NaN bounds with fewer than two seeds."""
    n = len(diff)
    if n < 2:
        return math.nan, math.nan
    found = stats.t_interval(diff.tolist(), CONFIDENCE)
    return found.low, found.high


def paired_table(results: pd.DataFrame, baseline: str, tasks: list[str]) -> str | None:
    """Markdown: a row per method, a column per task, cells `mean [low, high] (n)` in points; None if nothing pairs."""
    table = paired_differences(results, baseline)
    if table.empty:
        return None
    tasks = [t for t in tasks if t in set(table.task)]
    rows = []
    for method, group in table.groupby("method", sort=True):
        cells = {r.task: _cell(r) for r in group.itertuples()}
        rows.append([method] + [cells.get(t, "") for t in tasks])
    return tabulate(rows, headers=["method"] + tasks, tablefmt="github", disable_numparse=True)


def _cell(row) -> str:
    bounds = "" if math.isnan(row.low) else f" [{100 * row.low:+.2f}, {100 * row.high:+.2f}]"
    return f"{100 * row.mean:+.2f}{bounds} ({row.n})" + (" ⚠" if row.check_failed else "")


def paired_section(results: pd.DataFrame, baseline: str, tasks: list[str], score: str = "Test accuracy") -> list[str]:
    """The leaderboard's lines for one suite's paired table, or none when no method shares seeds with the baseline.

    `score` says in words what is differenced: the score the cells show (the tasks' main scores)."""
    table = paired_table(results, baseline, tasks)
    if table is None:
        return []
    return [f"### Paired differences from {baseline}", "",
            f"{score} minus {baseline}'s on the same task and seed (same initial weights, data order and "
            f"augmentations), in points: mean [{100 * CONFIDENCE:.0f}% t interval] (seeds paired). An interval that "
            "excludes zero is a difference the seeds cannot explain." + folders_note(results, baseline), "", table, ""]


def folders_note(results: pd.DataFrame, baseline: str) -> str:
    """While folders are overlaid, which of the baseline's rows a row is paired with; else nothing."""
    if results.source.nunique() < 2:
        return ""
    return (f" Each row is paired with the {baseline} row of its own folder where that folder has the task, "
            "else with the overlaid folder's, and only on seeds of the same epochs and batch size.")
