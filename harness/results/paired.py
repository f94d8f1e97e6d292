"""Per-seed paired differences from a baseline method, with a t interval and a Holm-corrected p. Imports no torch.

The harness seeds every run of a seed alike (initial weights, data order and
augmentations), so a method's score minus the baseline's score on the same
task and seed removes the seed-to-seed noise both share. Seeds pair only
where both records trained with the same epochs and batch size, on the same
version and parameters of the task.

One baseline's table is one family: each cell's paired t-test p is Holm-corrected over every cell of the
table (every method on every task), so "a difference the seeds cannot explain" counts all of them. Cells
on tasks that share a row's trained encoders (harness.results.shared_encoders) stay in the family: they
test the same encoders against different labels, so they are different hypotheses, and Holm holds under
any dependence between them; leaving one out would correct for fewer tests than the table makes.
"""

from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from harness.results import stats
from harness.results.overlay import counterpart
from harness.results.shared_encoders import WHY, shared_cells

CONFIDENCE = 0.95


def paired_differences(results: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (task, method other than `baseline`, by table name): n, mean difference and its interval,
    the paired t-test's two-sided p and that p Holm-corrected over every row returned (the table's family).

    `results` is the leaderboard's tidy table (harness.results.loading.load_results); scores are fractions.
    A row's baseline is that of its own folder where that folder has it, else the published one's.
    """
    rows = []
    for (task, method), group in seed_pairs(results, baseline).groupby(["task", "display"], sort=True):
        rows.append({"task": task, "method": method, **compared(group),
                     "per_seed": dict(zip(group.seed.astype(int), group.score - group.baseline_score))})
    columns = ["task", "method", "n", "mean", "low", "high", "p", "holm_p", "check_failed", "per_seed"]
    table = pd.DataFrame(rows, columns=columns)  # holm_p is filled below, over the whole table
    return table.assign(holm_p=stats.holm(table.p.tolist()))


def seed_pairs(results: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every scored row of a method other than `baseline`, with `baseline_score`: the baseline's score on the same
    task and seed where both trained alike (rows that pair with none are left out)."""
    ok = results[(results.status == "ok") & results.score.notna()]
    keys = ["task", "task_setting", "seed", "epochs", "batch_size"]  # seeds pair only where both trained alike
    pieces = []
    for (task, source), rows in ok[ok.name != baseline].groupby(["task", "source"]):
        base = counterpart(results, baseline, task, source)  # the baseline of the row's own folder, if it has one
        pieces.append(rows.merge(base[keys + ["score"]].rename(columns={"score": "baseline_score"}), on=keys))
    return pd.concat(pieces) if pieces else ok.assign(baseline_score=ok.score).iloc[:0]


def compared(pairs: pd.DataFrame) -> dict:
    """n, mean difference, its t interval and the paired t-test's two-sided p over `pairs` (seed_pairs' rows:
    of one task, or of several pooled), and whether any of them failed a check."""
    diff = pairs.score - pairs.baseline_score
    low, high = interval(diff)
    test = stats.paired_test(dict(enumerate(pairs.score)), dict(enumerate(pairs.baseline_score)))
    return {"n": len(diff), "mean": diff.mean(), "low": low, "high": high, "p": test.p_value,
            "check_failed": bool(pairs.check_failed.any())}


def interval(diff: pd.Series) -> tuple[float, float]:
    """The two-sided t interval of the mean difference; NaN bounds with fewer than two seeds."""
    n = len(diff)
    if n < 2:
        return math.nan, math.nan
    found = stats.t_interval(diff.tolist(), CONFIDENCE)
    return found.low, found.high


def paired_table(results: pd.DataFrame, baseline: str, tasks: list[str]) -> str | None:
    """Markdown: a row per method, a column per task, cells `mean [low, high] (n)` in points; None if nothing pairs."""
    return markdown_table(paired_differences(results, baseline), tasks)


def markdown_table(found: pd.DataFrame, tasks: list[str]) -> str | None:
    """paired_table's markdown from differences already computed (paired_differences); None if there are none."""
    if found.empty:
        return None
    tasks = [t for t in tasks if t in set(found.task)]
    rows = []
    for method, group in found.groupby("method", sort=True):
        cells = {r.task: cell_text(r) for r in group.itertuples()}
        rows.append([method] + [cells.get(t, "") for t in tasks])
    return tabulate(rows, headers=["method"] + tasks, tablefmt="github", disable_numparse=True)


def cell_text(row) -> str:
    """`mean [low, high] (n) p = HOLM_P`, in points; no p where fewer than two seeds pair."""
    bounds = "" if math.isnan(row.low) else f" [{100 * row.low:+.2f}, {100 * row.high:+.2f}]"
    p = "" if math.isnan(row.holm_p) else f" p = {row.holm_p:.2g}"
    return f"{100 * row.mean:+.2f}{bounds} ({row.n}){p}" + (" ⚠" if row.check_failed else "")


def paired_section(results: pd.DataFrame, baseline: str, tasks: list[str], score: str = "Test accuracy") -> list[str]:
    """The leaderboard's lines for one suite's paired table, or none when no method shares seeds with the baseline.

    `score` says in words what is differenced: the score the cells show (the tasks' main scores)."""
    found = paired_differences(results, baseline)
    table = markdown_table(found, tasks)
    if table is None:
        return []
    return [f"### Paired differences from {baseline}", "",
            f"{score} minus {baseline}'s on the same task and seed (same initial weights, data order and "
            f"augmentations), in points: {explained(found, results, tasks)}" + folders_note(results, baseline),
            "", table, ""]


def explained(found: pd.DataFrame, results: pd.DataFrame, tasks: list[str]) -> str:
    """What a paired table's cells show and how to read them, counting the comparisons of its family: `found`
    is the table's paired_differences, `results` the records they came from."""
    tested = int(found.holm_p.notna().sum())
    shared = shared_cells(results, tasks)
    return (f"mean [{100 * CONFIDENCE:.0f}% t interval] (seeds paired) and p, the paired t-test's two-sided p "
            f"Holm-corrected over this table's {tested} tested comparisons (one family). A corrected p below "
            f"{stats.ALPHA} is a difference the seeds cannot explain, every comparison of the table counted; the "
            "interval is for its comparison alone."
            + (" A row's cells on tasks that share its trained encoders (the note above) are not independent "
               f"replications: {WHY}; each is a test of its own task's labels, so each stays in the family."
               if shared else ""))


def folders_note(results: pd.DataFrame, baseline: str) -> str:
    """While folders are overlaid, which of the baseline's rows a row is paired with; else nothing."""
    if results.source.nunique() < 2:
        return ""
    return (f" Each row is paired with the {baseline} row of its own folder where that folder has the task, "
            "else with the overlaid folder's, and only on seeds of the same epochs, batch size and task version.")
