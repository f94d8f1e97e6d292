"""Records -> tables -> LEADERBOARD.md. Generated, never edited by hand; imports no torch.

One table per suite: a row per method, a column per task with mean ± std (n)
of test accuracy over seeds, the best mean bolded, the papers' reported
numbers in a column beside ours where they exist, and an average rank only
for methods that have every task of the suite. A cell takes the seeds of one
run identity (harness.identity); records that mix two are refused, naming them.
"""

from __future__ import annotations

import csv
import io
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from harness.errors import HarnessError
from harness.identity import differences
from harness.paired import paired_section
from harness.records import Record, read_records, record_path

METRIC = "test_acc"
NO_RUN = "—"
CHECK_FAILED = "⚠"


@dataclass(frozen=True)
class Reported:
    value: float
    source: str


def load_results(root: Path) -> pd.DataFrame:
    rows = []
    records = list(read_records(root))
    refuse_mixed_identities(root, records)
    for r in records:
        rows.append({
            "suite": r.task.get("suite", "misc"), "task": r.task["name"], "method": r.method["name"],
            "display": r.method["display_name"], "seed": r.seed, "status": r.status, "reason": r.reason,
            "score": r.metrics.get(METRIC), "f1": r.metrics.get("test_f1"),
            "epochs": r.protocol.get("epochs"), "trials": r.protocol.get("trials"),
            "batch_size": r.protocol.get("batch_size"),
            "hardware": r.environment.get("hardware"), "device": r.environment.get("device"),
            "torch": r.environment.get("torch"), "harness": r.environment.get("harness"),
            "commit": r.environment.get("git_commit"), "finished_at": r.finished_at,
            "wall_time_s": r.wall_time_s,
            "check_failed": any(not check["held"] for check in r.checks.values()),
        })
    return pd.DataFrame(rows)


def refuse_mixed_identities(root: Path, records: list[Record]) -> None:
    """A cell's seeds must all stand for one run identity; a cell that mixes two is refused, naming the files."""
    cells: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.status == "ok":
            cells.setdefault((r.task["name"], r.method["name"]), []).append(r)
    for (task, method), cell in sorted(cells.items()):
        # Compare with a record that stored its fixed values, if any: a migrated one is compared by its values.
        reference = next((r for r in cell if r.identity.get("fixed") is not None), cell[0])
        for r in cell:
            found = differences(r.identity, reference.identity, r.hparams)
            if found:
                a, b = (record_path(root, task, method, x.seed) for x in (r, reference))
                raise HarnessError(
                    f"{a} and {b} were made under different run identities ({found[0].between(a.name, b.name)}); "
                    f"a leaderboard cell takes one: rerun `harness run --method {method} --task {task}` to "
                    f"replace the stale seeds, or remove them")


def load_reported(reference_dir: Path) -> tuple[dict[tuple[str, str], Reported], dict[str, str]]:
    """(task, method table name) -> reported score, and task -> suite for the reported tasks."""
    config_path = reference_dir / "sources.toml"
    if not config_path.exists():
        return {}, {}
    reported: dict[tuple[str, str], Reported] = {}
    suites: dict[str, str] = {}
    for source in tomllib.loads(config_path.read_text()).get("source", []):
        lines = [ln for ln in (reference_dir / source["file"]).read_text().splitlines() if not ln.startswith("#")]
        for row in csv.DictReader(io.StringIO("\n".join(lines))):
            for task, spec in source["tasks"].items():
                suites[task] = spec["suite"]
                cell = row.get(spec["column"], "")
                if cell.strip():
                    reported.setdefault((task, row["method"]),
                                        Reported(float(cell) * source["scale"], source["label"]))
    return reported, suites


def load_suite_settings(reference_dir: Path) -> dict:
    """sources.toml's per-suite `[notes]` (lines printed under a table) and `[paired]` (the baseline to pair with)."""
    path = reference_dir / "sources.toml"
    settings = tomllib.loads(path.read_text()) if path.exists() else {}
    return {"notes": settings.get("notes", {}), "paired": settings.get("paired", {})}


def _cell(scores: pd.Series) -> str:
    mean, n = scores.mean(), scores.count()
    std = scores.std(ddof=1) if n > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * std:.2f} ({n})"


def suite_table(results: pd.DataFrame, tasks: list[str], reported: dict[tuple[str, str], Reported]) -> str:
    ok = results[results.status == "ok"]
    means = ok.groupby(["display", "task"]).score.mean().unstack("task").reindex(columns=tasks)
    reported_tasks = [t for t in tasks if any(key[0] == t for key in reported)]
    methods = list(dict.fromkeys(list(results.display) + [m for (t, m) in reported if t in tasks]))
    complete = means.dropna().index  # methods with every task of the suite
    ranks = means.loc[complete].rank(ascending=False, method="average").mean(axis=1)
    best = means.max()
    headers = ["method"]
    for task in tasks:
        headers.append(task)
        if task in reported_tasks:
            headers.append(f"{task} (paper)")
    headers.append("avg rank")
    rows = []
    for method in methods:
        row = [method]
        for task in tasks:
            row.append(_our_cell(results, ok, method, task, best.get(task)))
            if task in reported_tasks:
                hit = reported.get((task, method))
                row.append(f"{100 * hit.value:.2f}" if hit else "")
        row.append(f"{ranks[method]:.2f}" if method in ranks.index else "")
        rows.append(row)
    order = sorted(range(len(rows)), key=lambda i: (methods[i] not in ranks.index, ranks.get(methods[i], 0), i))
    return tabulate([rows[i] for i in order], headers=headers, tablefmt="github", disable_numparse=True)


def _our_cell(results, ok, method: str, task: str, best: float | None) -> str:
    cell = ok[(ok.display == method) & (ok.task == task)]
    scores = cell.score
    if len(scores):
        text = _cell(scores) + (f" {CHECK_FAILED}" if cell.check_failed.any() else "")
        return f"**{text}**" if best is not None and scores.mean() == best else text
    na = results[(results.display == method) & (results.task == task) & (results.status == "n/a")]
    return f"n/a: {na.reason.iloc[0]}" if len(na) else NO_RUN


def protocol_table(results: pd.DataFrame) -> str:
    ok = results[results.status == "ok"]
    grouped = ok.groupby(["task", "display"]).agg(
        epochs=("epochs", "first"), trials=("trials", "first"), seeds=("seed", "count"),
        batch=("batch_size", "first"), minutes=("wall_time_s", lambda s: round(s.sum() / 60, 1)),
    ).reset_index()
    return tabulate(grouped.values.tolist(), headers=["task", "method", "epochs", "trials", "seeds", "batch",
                                                      "train+probe min (all seeds)"],
                    tablefmt="github", disable_numparse=True)


def render(root: Path) -> str:
    results = load_results(root)
    if results.empty:
        raise HarnessError(f"no result records under {root / 'records'}; run `harness run` first")
    reported, reported_suites = load_reported(root / "reference")
    settings = load_suite_settings(root / "reference")
    parts = ["# Leaderboard", "",
             "Generated by `harness leaderboard` from the records in `results/records/`; do not edit by hand.",
             "Cells: test accuracy (%) of a linear probe on the frozen representation, mean ± std over seeds (n).",
             "The best mean per task is bold. `(paper)` columns are the papers' reported numbers, not reproduced "
             "here. Average rank only for methods with every task of the table. "
             f"{NO_RUN}: no run recorded (for tasks read from downloaded files: their data were not present "
             "where these records were made). "
             f"{CHECK_FAILED}: at least one seed failed an assumption its method rests on (the record's `checks` "
             "say which and by how much).", ""]
    suites = sorted(set(results.suite) | set(reported_suites.values()))
    for suite in suites:
        ours = results[results.suite == suite]
        tasks = sorted(set(ours.task) | {t for t, s in reported_suites.items() if s == suite})
        parts += [f"## {suite}", "", suite_table(ours, tasks, reported), ""]
        parts += [f"Note: {note}\n" for note in settings["notes"].get(suite, [])]
        if suite in settings["paired"]:
            parts += paired_section(ours, settings["paired"][suite], tasks)
    parts += ["## Protocol", "", protocol_table(results), "", footer(results), ""]
    return "\n".join(parts)


def footer(results: pd.DataFrame) -> str:
    ok = results[results.status == "ok"]

    def values(column: str) -> str:
        return ", ".join(sorted({str(v) for v in ok[column].dropna()})) or "-"

    dates = sorted(d[:10] for d in ok.finished_at if d)
    span = f"{dates[0]} to {dates[-1]}" if dates else "-"
    return (f"Hardware: {values('hardware')} ({values('device')}). torch {values('torch')}, "
            f"harness {values('harness')}, commits {values('commit')}. Runs finished {span}.")


def leaderboard_command(root: Path, check: bool = False) -> int:
    path = Path(root) / "LEADERBOARD.md"
    text = render(Path(root))
    if check:
        if not path.exists() or path.read_text() != text:
            raise HarnessError(f"{path} is out of date with the records; run `harness leaderboard` and commit it")
        print(f"{path} is up to date")
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0
