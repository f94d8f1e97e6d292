"""The web page's per-row details: a row's hyperparameters, per-seed scores and MLflow runs, task by task.

Each row of a suite's table links to a `<details>` block below the table (opened by the link, no script
needed beyond the page's own). A record keeps the MLflow server it tracked to only when that was an
http(s) server (harness.results.records.mlflow_server); there its run id links to the run's page, else
the id is shown as text and the page says how to open it in `mlflow ui`.
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd

from harness.results.protocol_marks import OFF_PROTOCOL
from harness.results.records import run_page
from harness.results.shared_encoders import SharedCells

HOW_TO_OPEN = (
    "MLflow runs: a run id links to its run where the record names the MLflow server it tracked to (an http(s) "
    "`--tracking-uri`). Otherwise the run is in the store the run tracked to, by default "
    "`sqlite:///PATH/.harness/mlflow.db` in the folder `harness run` ran from: open it with "
    "`mlflow ui --backend-store-uri sqlite:///PATH/.harness/mlflow.db`, then `http://127.0.0.1:5000/#/runs/RUN_ID`.")


def anchor(suite: str, row: str) -> str:
    """The id of a row's details block: unique per (suite, row) and safe in a URL fragment."""
    return "row-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{suite}--{row}").strip("-")


def row_details(results: pd.DataFrame, suite: str, rows: list[str], tasks: list[str],
                off_protocol: dict[tuple[str, str], str], shared: SharedCells | None = None) -> dict[str, str]:
    """Row -> its `<details>` block, for every row with a record in the suite, in the table's order; `shared`
    says which of a row's cells hold the trained encoders of its cell on another task
    (harness.results.shared_encoders.shared_cells)."""
    shared = shared or {}
    ok = results[(results.suite == suite) & (results.status == "ok")]
    blocks = {}
    for row in rows:
        mine = ok[ok.display == row]
        if mine.empty:
            continue
        parts = [f'<details id="{anchor(suite, row)}"><summary>{html.escape(row)}</summary>']
        for task in tasks:
            cell = mine[mine.task == task].sort_values("seed")
            if len(cell):
                parts += _task_block(task, cell, off_protocol.get((task, row), ""), shared.get((row, task), []))
        blocks[row] = "\n".join(parts + ["</details>"])
    return blocks


def _task_block(task: str, cell: pd.DataFrame, off_protocol: str,
                shared_with: list[tuple[str, int, int]]) -> list[str]:
    first = cell.iloc[0]
    protocol = (f"{_number(first.epochs)} epochs, {_number(first.trials)} trials, "
                f"{_number(first.protocol_seeds)} seeds, batch {_number(first.batch_size)}")
    mark = f" {OFF_PROTOCOL} Off the column's protocol ({html.escape(off_protocol)}): not ranked." \
        if off_protocol else ""
    lines = [f"<h4>{html.escape(task)}</h4>", f"<p>{protocol}.{mark}</p>"]
    for earlier, common, total in shared_with[:1]:  # the first task holding them names them; the table's note says all
        share = f"the same {total} as" if common == total else f"{common} of its {total} are those"
        lines.append(f"<p>Encoders: {share} on {html.escape(earlier)}, probed here with this task's labels (not "
                     "further evidence of them).</p>")
    shared = all(h == first.hparams for h in cell.hparams)
    if shared:
        lines.append(f"<p>Hyperparameters (every seed): {_hparams(first.hparams)}</p>")
    else:
        lines.append("<p>Hyperparameters differ between seeds: each seed's are in its row.</p>")
    score = html.escape(str(first.main_score))
    head = f"<tr><th>seed</th><th>{score} (%)</th><th>MLflow run</th>" + ("" if shared else "<th>hyperparameters</th>")
    body = []
    for r in cell.itertuples():
        value = "" if r.score is None or math.isnan(r.score) else f"{100 * r.score:.2f}"
        extra = "" if shared else f"<td>{_hparams(r.hparams)}</td>"
        body.append(f"<tr><td>{int(r.seed)}</td><td>{value}</td><td>{_run(r.run_id, r.mlflow_server)}</td>{extra}</tr>")
    lines.append(f'<table class="seeds">\n<thead>{head}</tr></thead>\n<tbody>\n' + "\n".join(body)
                 + "\n</tbody>\n</table>")
    return lines


def _hparams(values: dict) -> str:
    if not values:
        return "none recorded"
    return ", ".join(f"<code>{html.escape(str(k))}={html.escape(_value(v))}</code>" for k, v in sorted(values.items()))


def _value(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return str(int(value)) if float(value).is_integer() else str(value)


def _run(run_id: object, server: object) -> str:
    if not isinstance(run_id, str) or not run_id:  # None, or NaN where pandas joined folders
        return "none recorded"
    link = run_page(server, run_id)
    code = f"<code>{html.escape(run_id)}</code>"
    return f'<a href="{html.escape(link)}">{code}</a>' if link else code
