"""Records -> tables -> LEADERBOARD.md. Generated, never edited by hand; imports no torch.

One table per suite: a row per method, a column per task with the mean and its
95% interval over seeds, the best mean bold, the rows a paired test cannot
tell from the best marked, the papers' reported numbers in a column beside
ours, and an average rank only for methods that have every task of the suite.
Folders overlaid with --with are read beside the first (harness.results.overlay);
a cell off its column's protocol is marked and not ranked (harness.results.protocol_marks).
The records are read, and a cell whose seeds mix two run identities refused, by
harness.results.loading. The statistics live in `harness.results.stats`;
figures and the web page in `harness.results.publishing`, fed by the same tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from harness.results import stats
from harness.results.encoders import EncoderFacts
from harness.results.loading import METRIC, Reported, load_folders, load_suite_settings, reported_beside
from harness.results.overlay import Folders, counterpart, folders
from harness.results.paired import paired_section
from harness.results.protocol_marks import OFF_PROTOCOL, protocol_marks
from harness.results.shared_encoders import checks_note, sharing_note

NO_RUN = "—"
CHECK_FAILED = "⚠"
NOT_MEASURABLE = "◌"
TIED = "≈"
DIRTY = "†"
ABOVE_REFERENCE = "▲"


@dataclass(frozen=True)
class Cell:
    text: str
    sort: float | None = None  # what a sortable view orders by; None sorts last
    bold: bool = False


@dataclass
class Table:
    """One suite's table, rendered as markdown and as HTML from the same cells."""

    suite: str
    tasks: list[str]
    headers: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    critical_difference: stats.CriticalDifference | None = None
    paired_baseline: str | None = None  # sources.toml's [paired]: every other row paired seed by seed with it
    paired_lines: list[str] = field(default_factory=list)  # that section in markdown (harness.results.paired)
    controls: list[str] = field(default_factory=list)  # sources.toml's [controls]: each paired like the baseline
    reference: str | None = None  # sources.toml's [reference]: a row any other row's mean above is flagged


@dataclass(frozen=True)
class Summary:
    """One (task, method) cell: its interval and what the statistics say about it."""

    interval: stats.Interval
    best: bool
    tied: bool
    check_failed: bool
    dirty: bool
    check_unmeasurable: bool = False
    above_reference: bool = False
    off_protocol: str = ""  # why the cell is off its column's protocol (harness.results.protocol_marks); unranked


def main_scores(results: pd.DataFrame) -> dict[str, str]:
    """task -> the name of the score its cells show and rank by."""
    if results.empty or "main_score" not in results:
        return {}
    ok = results[results.status == "ok"]
    return dict(zip(ok.task, ok.main_score))


def side_scores(results: pd.DataFrame, task: str) -> list[str]:
    """The further scores the task's records carry, in the order the task declares them."""
    ok = results[(results.status == "ok") & (results.task == task)]
    return list(dict.fromkeys(name for side in ok.side for name in side))


def score_phrase(results: pd.DataFrame, tasks: list[str]) -> str:
    """What a suite's cells measure, in words: test accuracy, or the main score each task declares."""
    named = {t: m for t, m in main_scores(results).items() if t in tasks and m != METRIC}
    if not named:
        return "Test accuracy"
    listed = "; ".join(f"{t}: `{m}`" for t, m in sorted(named.items()))
    return f"Each task's main score ({listed}; otherwise test accuracy)"




def summarize(results: pd.DataFrame, reference: str | None = None) -> dict[tuple[str, str], Summary]:
    """(task, display name) -> Summary, for every cell with at least one scored seed, on the task's main score.

    With a `reference` row, every other row whose mean is above the reference's on that task is flagged
    (the reference of the row's own folder, harness.results.overlay.counterpart). A cell off its column's
    protocol is summarized but takes no part in the best or the ties."""
    ok = results[(results.status == "ok") & results.score.notna()] if len(results) else results
    marks = protocol_marks(results)
    summaries: dict[tuple[str, str], Summary] = {}
    for task, in_task in ok.groupby("task"):
        by_method = {m: dict(zip(g.seed, g.score)) for m, g in in_task.groupby("display") if (task, m) not in marks}
        comparison = stats.compare_with_best(by_method) if by_method else None
        ties = comparison.ties() if comparison else set()
        for (method, name, source), group in in_task.groupby(["display", "name", "source"]):
            interval = stats.t_interval(group.score.tolist())
            compared = counterpart(results, reference, task, source) if reference else None
            reference_mean = float(compared.score.mean()) if compared is not None and len(compared) else math.nan
            summaries[(task, method)] = Summary(
                interval, comparison is not None and method == comparison.best, method in ties,
                bool(group.check_failed.any()), bool(group.dirty.any()), bool(group.check_unmeasurable.any()),
                name != reference and interval.mean > reference_mean, marks.get((task, method), ""))
    return summaries


def cell_text(summary: Summary) -> str:
    interval = summary.interval
    spread = "" if math.isnan(interval.low) else f" ± {100 * interval.half_width:.2f}"
    marks = "".join(mark for mark, on in ((OFF_PROTOCOL, bool(summary.off_protocol)), (TIED, summary.tied),
                                           (ABOVE_REFERENCE, summary.above_reference),
                                           (CHECK_FAILED, summary.check_failed),
                                           (NOT_MEASURABLE, summary.check_unmeasurable), (DIRTY, summary.dirty))
                    if on)
    return f"{100 * interval.mean:.2f}{spread} ({interval.n})" + (f" {marks}" if marks else "")


def side_text(values: list[float]) -> Cell:
    """A side score's cell: its mean and interval over seeds, unranked."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return Cell(NO_RUN)
    interval = stats.t_interval(values)
    spread = "" if math.isnan(interval.low) else f" ± {100 * interval.half_width:.2f}"
    return Cell(f"{100 * interval.mean:.2f}{spread} ({interval.n})", interval.mean)


def suite_table(suite: str, results: pd.DataFrame, tasks: list[str],
                reported: dict[tuple[str, str], Reported], reference: str | None = None) -> Table:
    summaries = summarize(results, reference)
    named = main_scores(results)
    sides = {task: side_scores(results, task) for task in tasks} if len(results) else {}
    reported_tasks = [t for t in tasks if any(key[0] == t for key in reported)]
    methods = list(dict.fromkeys(list(results.display) + [m for (t, m) in reported if t in tasks]))
    means = pd.DataFrame({t: {m: s.interval.mean for (tt, m), s in summaries.items() if tt == t and not s.off_protocol}
                          for t in tasks}, index=methods, columns=tasks, dtype=float)
    complete = means.dropna()  # methods with every task of the suite, each at its column's protocol
    ranks = stats.average_ranks(complete) if len(complete) else pd.Series(dtype=float)
    headers = ["method"]
    for task in tasks:
        main = named.get(task, METRIC)
        headers += [task if main == METRIC else f"{task}: {main}"] + ([f"{task} (paper)"] if task in reported_tasks
                                                                     else [])
        headers += [f"{task}: {side}" for side in sides.get(task, [])]
    headers.append("avg rank")
    rows = []
    for method in methods:
        row = [Cell(method, None)]
        for task in tasks:
            row.append(_our_cell(results, summaries.get((task, method)), method, task))
            if task in reported_tasks:
                row.append(_reported_cell(reported.get((task, method))))
            for side in sides.get(task, []):
                cell = results[(results.display == method) & (results.task == task) & (results.status == "ok")]
                row.append(side_text([found.get(side) for found in cell.side]))
        row.append(Cell(f"{ranks[method]:.2f}", float(ranks[method])) if method in ranks.index else Cell(""))
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda i: (methods[i] not in ranks.index, ranks.get(methods[i], 0), i))
    table = Table(suite, tasks, headers, [rows[i] for i in order],
                  critical_difference=stats.critical_difference(complete) if len(complete) else None,
                  reference=reference)
    if table.critical_difference is not None:
        cd = table.critical_difference
        table.notes.append(
            f"Average ranks over {cd.tasks} tasks: Friedman p = {cd.friedman_p:.3g}; Nemenyi critical difference "
            f"{cd.cd:.2f} at α = {cd.alpha}: two methods whose average ranks differ by less are not "
            "distinguishable across these tasks.")
    table.notes += off_protocol_notes(summaries, tasks)
    return table


PAPERS_ONLY = ("the papers' own numbers on tasks with no record in this folder (for a task read from downloaded "
               "files: its data were not present where the records were made): reported, not reproduced, and "
               "ranked with nothing of ours. Where another task stands in for one of them, "
               "[CLAIMS.md](CLAIMS.md) says which and how they differ.")


def papers_table(suite: str, tasks: list[str], reported: dict[tuple[str, str], Reported],
                 notes: list[str]) -> Table:
    """The papers' reported numbers on tasks of `suite` that no record here ran, apart from our rows."""
    methods = list(dict.fromkeys(m for (t, m) in reported if t in tasks))
    headers = ["method", *(f"{task} (paper)" for task in tasks)]
    rows = [[Cell(method, None), *(_reported_cell(reported.get((task, method))) for task in tasks)]
            for method in methods]
    return Table(f"{suite}: reported by the papers, not run here", tasks, headers, rows,
                 notes=[f"Note: {PAPERS_ONLY}", *notes])


def _reported_cell(hit: Reported | None) -> Cell:
    return Cell(f"{100 * hit.value:.2f}", hit.value) if hit else Cell("")


def off_protocol_notes(summaries: dict[tuple[str, str], Summary], tasks: list[str]) -> list[str]:
    """One line per row with cells off their column's protocol: which tasks, and how the protocols differ."""
    found: dict[tuple[str, str], list[str]] = {}
    for task in tasks:
        for (t, method), summary in summaries.items():
            if t == task and summary.off_protocol:
                found.setdefault((method, summary.off_protocol), []).append(task)
    return [f"{OFF_PROTOCOL} {method} on {', '.join(on)}: {why}; not ranked." for (method, why), on in found.items()]


def _our_cell(results: pd.DataFrame, summary: Summary | None, method: str, task: str) -> Cell:
    if summary is not None:
        return Cell(cell_text(summary), summary.interval.mean, summary.best)
    na = results[(results.display == method) & (results.task == task) & (results.status == "n/a")]
    return Cell(f"n/a: {na.reason.iloc[0]}") if len(na) else Cell(NO_RUN)


def markdown_table(table: Table) -> str:
    rows = [[f"**{c.text}**" if c.bold else c.text for c in row] for row in table.rows]
    return tabulate(rows, headers=table.headers, tablefmt="github", disable_numparse=True)


def protocol_rows(results: pd.DataFrame) -> tuple[list[str], list[list]]:
    ok = results[results.status == "ok"]
    grouped = ok.groupby(["task", "display"]).agg(
        epochs=("epochs", "first"), trials=("trials", "first"), seeds=("seed", "count"),
        batch=("batch_size", "first"), minutes=("wall_time_s", lambda s: round(s.sum() / 60, 1)),
    ).reset_index()
    headers = ["task", "method", "epochs", "trials", "seeds", "batch", "train+probe min (all seeds)"]
    return headers, grouped.values.tolist()


def protocol_table(results: pd.DataFrame) -> str:
    headers, rows = protocol_rows(results)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


LEGEND = (
    "Cells: a task's main score (%), by default the test accuracy of a linear probe on the frozen representation; "
    "a column headed `task: score` shows another: a task's declared main score (its rows are bold, tied and "
    "ranked on it; `heldout_group_acc` is the probe scored on member groups its labels never showed it: the "
    "representation, and a guide's pretraining pool, may hold their images, as each record's notes say, "
    "`harness/running/grouped.py`) or, after it, further scores shown unranked. Mean ± half-width of its 95% "
    "Student-t interval over seeds (n seeds). The best mean per task is bold; "
    f"{TIED}: a paired t-test over matched seeds, Holm-corrected over the task's rows, cannot tell this row from "
    "the best at α = 0.05 (see `harness/results/stats.py` for the choices). `(paper)` columns are the papers' reported "
    "numbers, not reproduced here. Average rank only for methods with every task of the table. "
    f"{NO_RUN}: no run recorded (for tasks read from downloaded files: their data were not present where these "
    f"records were made). {CHECK_FAILED}: at least one seed failed an assumption its method rests on (the "
    f"record's `checks` say which and by how much). {NOT_MEASURABLE}: at least one seed's check could not have "
    f"failed in that run (its estimator was pinned; the record says why), so it neither held nor failed. {DIRTY}: at least one seed was trained from a working tree "
    "with uncommitted changes, so its commit does not say which code produced it. "
    f"{ABOVE_REFERENCE}: the mean is above the table's reference row on that task (a reference such as a label "
    "oracle is not a bound: a row above it is flagged, not hidden). "
    f"{OFF_PROTOCOL}: the cell was run under another protocol (epochs, trials, seeds, batch size or ranks) than its "
    "column's published rows (the folders overlaid with `--with`; with none, the protocol most of the column's "
    "rows share): a note under the table says how it differs; the cell is shown but takes no part in the best, the "
    "ties or the average rank.")


def build(where: Folders | Path, facts: EncoderFacts = EncoderFacts()) -> tuple[pd.DataFrame, list[Table]]:
    """The records' table and the suites' tables, from one results folder or folders overlaid; `facts` as for
    load_results."""
    where = where if isinstance(where, Folders) else folders(Path(where))
    results = load_folders(where, facts)
    reported, reported_suites = reported_beside(where)
    settings = load_suite_settings(where.reference())
    tables = []
    for suite in sorted(set(results.suite) | set(reported_suites.values())):
        ours = results[results.suite == suite]
        tasks = sorted(set(ours.task))
        # A paper's number stands beside ours only on a task both ran. The papers' other tasks get a table of
        # their own, so no row that reads as this harness's results holds a number from a task it never ran.
        papers_only = sorted({t for t, s in reported_suites.items() if s == suite} - set(tasks))
        notes = [f"Note: {note}" for note in settings["notes"].get(suite, [])]
        apart = [papers_table(suite, papers_only, reported, [] if tasks else notes)] if papers_only else []
        if not tasks:
            tables += apart
            continue
        table = suite_table(suite, ours, tasks, reported, settings["reference"].get(suite))
        table.notes += [note for note in (sharing_note(ours, tasks), checks_note(ours, CHECK_FAILED)) if note]
        table.notes += notes
        table.controls = list(settings["controls"].get(suite, []))
        phrase = score_phrase(ours, tasks)
        if suite in settings["paired"]:
            table.paired_baseline = settings["paired"][suite]
            table.paired_lines = paired_section(ours, table.paired_baseline, tasks, phrase)
        for control in table.controls:  # the mechanism holds only where a row beats each control too
            table.paired_lines += paired_section(ours, control, tasks, phrase)
        tables += [table, *apart]
    return results, tables


def render(root: Path, overlays: list[Path] | tuple[Path, ...] = (), facts: EncoderFacts = EncoderFacts()) -> str:
    where = folders(Path(root), overlays)
    return compose(*build(where, facts), origin=where.describe())


def compose(results: pd.DataFrame, tables: list[Table], figures: dict[str, list[tuple[str, str]]] | None = None,
            *, origin: str) -> str:
    """The markdown; `figures` maps a section (a suite, or "curves") to (caption, path) shown under it;
    `origin` says which folders the records came from (harness.results.overlay.Folders.describe)."""
    figures = figures or {}
    parts = ["# Leaderboard", "",
             f"Generated by `harness leaderboard` from {origin}; do not edit by hand. "
             "The same tables, sortable, with every figure: [`index.html`](index.html).", "", LEGEND, ""]
    for table in tables:
        parts += [f"## {table.suite}", "", markdown_table(table), ""]
        parts += [note + "\n" for note in table.notes]
        parts += table.paired_lines
        parts += [f"![{caption}]({path})\n" for caption, path in figures.get(table.suite, [])]
    parts += ["## Protocol", "", protocol_table(results), "", footer(results), ""]
    if figures.get("curves"):
        parts += ["## Tuning histories and training curves", "",
                  "Drawn from `history/` (trials and per-epoch curves a run keeps beside its records); pairs whose "
                  "records predate it have none.", ""]
        parts += [f"- [{caption}]({path})" for caption, path in figures["curves"]] + [""]
    return "\n".join(parts).rstrip("\n") + "\n"


def footer(results: pd.DataFrame) -> str:
    ok = results[results.status == "ok"]

    def values(column: str) -> str:
        return ", ".join(sorted({str(v) for v in ok[column].dropna()})) or "-"

    dates = sorted(d[:10] for d in ok.finished_at if d)
    span = f"{dates[0]} to {dates[-1]}" if dates else "-"
    return (f"Hardware: {values('hardware')} ({values('device')}). torch {values('torch')}, "
            f"harness {values('harness')}, commits {values('commit')}. Runs finished {span}.")
