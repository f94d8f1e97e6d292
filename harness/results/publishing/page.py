"""The web leaderboard: one self-contained HTML file (no server, nothing fetched at view time).

Tables are the leaderboard's own `Table`s, sortable by a click on a header
(each cell carries its numeric sort key); figures are the committed SVG files,
inlined as data URIs so the page stands alone and figures cannot clash.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from harness.results.leaderboard import LEGEND, Cell, Table, footer, protocol_rows, score_phrase
from harness.results.overlay import Folders
from harness.results.paired import cell_text, explained, folders_note, paired_differences
from harness.results.protocol_marks import protocol_marks
from harness.results.publishing.figures import Figure
from harness.results.publishing.row_details import HOW_TO_OPEN, anchor, row_details
from harness.results.shared_encoders import shared_cells

PAGE_FILE = "index.html"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th[aria-sort="ascending"]::after { content: " ▲"; }
th[aria-sort="descending"]::after { content: " ▼"; }
td.best { font-weight: bold; }
td.paper { color: #666; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
code { background: #f3f3f3; padding: 0 0.2em; }
details { margin: 0.3em 0; }
summary { cursor: pointer; }
table.seeds th { cursor: auto; }
"""

# Sorts by each cell's data-sort number when it has one, else by its text; empty cells always last.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var cell = row.cells[column];
        var number = cell.getAttribute("data-sort");
        return number !== null ? parseFloat(number) : cell.textContent.trim();
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
// A row's name opens its details below the table; so does a link to them from elsewhere.
function openDetails() {
  var target = location.hash && document.getElementById(location.hash.slice(1));
  if (target && target.tagName === "DETAILS") { target.open = true; }
}
window.addEventListener("hashchange", openDetails);
openDetails();
"""


PROTOCOL = (
    "Every (task, method) pair follows one protocol: Optuna's seeded TPE sampler tunes it on validation "
    "linear-probe accuracy under the same trial and epoch budget for every method (a median pruner stops weak "
    "trials on a quick per-epoch probe); the best configuration is retrained with seeds 0..K-1, which tuning never "
    "used; each seed's frozen representation is scored once on the test split by a logistic regression on "
    "standardized features whose regularization is chosen on validation. Reference rows: the probe on raw inputs "
    "and on the task's untrained encoders. Each seed's record carries its full identity; `harness reproduce "
    "RECORD.json` reruns one.")


def _inline(text: str) -> str:
    """The little markdown the legend uses: `code`."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _td(cell: Cell, header: str, link: str | None = None) -> str:
    classes = [c for c, on in (("best", cell.bold), ("paper", header.endswith("(paper)"))) if on]
    attributes = f' class="{" ".join(classes)}"' if classes else ""
    if cell.sort is not None:
        attributes += f' data-sort="{cell.sort!r}"'
    text = html.escape(cell.text)
    return f'<td{attributes}><a href="#{link}">{text}</a></td>' if link else f"<td{attributes}>{text}</td>"


def html_table(headers: list[str], rows: list[list[Cell]], table_id: str, links: dict[str, str] | None = None) -> str:
    """`links` maps a row's first cell to the id its name links to (its details)."""
    links = links or {}
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "\n".join("<tr>" + "".join(_td(c, h, links.get(c.text) if i == 0 else None)
                                       for i, (c, h) in enumerate(zip(row, headers))) + "</tr>" for row in rows)
    return f'<table class="sortable" id="{table_id}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _figure(root: Path, spec: Figure) -> str:
    path = root / spec.path
    if not path.exists():
        return f"<p>missing figure {html.escape(spec.path)}; run <code>harness leaderboard</code></p>"
    encoded = base64.b64encode(path.read_bytes()).decode()
    caption = html.escape(spec.caption)
    return (f'<figure><img alt="{caption}" src="data:image/svg+xml;base64,{encoded}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _paired(results: pd.DataFrame, table: Table, baseline: str) -> list[str]:
    """The suite's paired differences from a baseline or control (harness.results.paired), as a sortable table."""
    ours = results[results.suite == table.suite]
    differences = paired_differences(ours, baseline)
    if differences.empty:
        return []
    tasks = [t for t in table.tasks if t in set(differences.task)]
    rows = []
    for method, group in differences.groupby("method", sort=True):
        cells = {r.task: r for r in group.itertuples()}
        row = [Cell(method)]
        for task in tasks:
            r = cells.get(task)
            if r is None:
                row.append(Cell(""))
                continue
            row.append(Cell(cell_text(r), float(r.mean)))
        rows.append(row)
    slug = "".join(c if c.isalnum() else "-" for c in baseline.lower())
    return [f"<h3>Paired differences from {html.escape(baseline)}</h3>",
            f"<p>{html.escape(score_phrase(ours, table.tasks))} minus {html.escape(baseline)}'s on the same task "
            f"and seed, in points: {_inline(explained(differences, ours, table.tasks))}"
            f"{html.escape(folders_note(ours, baseline))}</p>",
            html_table(["method"] + tasks, rows, f"paired-{table.suite}" + ("" if baseline == table.paired_baseline
                                                                           else f"-{slug}"))]


def _protocol(results: pd.DataFrame) -> str:
    headers, rows = protocol_rows(results)
    cells = [[Cell(str(v), float(v) if isinstance(v, (int, float)) else None) for v in row] for row in rows]
    return html_table(headers, cells, "protocol")


def render_page(where: Folders, results: pd.DataFrame, tables: list[Table], specs: list[Figure],
                claims: str = "") -> str:
    """The page; `claims` is the claims section's HTML (harness.results.publishing.claims_page), after the tables."""
    root = where.root.path
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             "<title>Leaderboard</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
             "<h1>Leaderboard</h1>",
             f"<p>Generated by <code>harness leaderboard</code> from {_inline(where.describe())}; "
             "do not edit by hand. Click a column header to sort, a row's name for its hyperparameters, per-seed "
             "scores and MLflow runs.</p>", f"<p>{_inline(LEGEND)}</p>"]
    off_protocol = protocol_marks(results)
    for table in tables:
        shared = shared_cells(results[results.suite == table.suite], table.tasks)
        details = row_details(results, table.suite, [row[0].text for row in table.rows], table.tasks, off_protocol,
                              shared)
        links = {name: anchor(table.suite, name) for name in details}
        parts += [f'<h2 id="suite-{html.escape(table.suite)}">{html.escape(table.suite)}</h2>',
                  html_table(table.headers, table.rows, f"table-{table.suite}", links)]
        parts += [f"<p>{_inline(note)}</p>" for note in table.notes]
        if table.paired_baseline:
            parts += _paired(results, table, table.paired_baseline)
        for control in table.controls:
            parts += _paired(results, table, control)
        parts += [_figure(root, s) for s in specs if s.section == table.suite]
        if details:
            parts += [f"<h3>{html.escape(table.suite)}: rows in detail</h3>", *details.values()]
    parts += [claims] if claims else []
    parts += ["<h2>Protocol</h2>", f"<p>{_inline(PROTOCOL)}</p>", _protocol(results),
              f"<p>{_inline(footer(results))}</p>", f"<p>{_inline(HOW_TO_OPEN)}</p>"]
    curves = [s for s in specs if s.section == "curves"]
    if curves:
        parts += ["<h2>Tuning histories and training curves</h2>"] + [_figure(root, s) for s in curves]
    parts += [f"<script>{SCRIPT}</script>", "</body>", "</html>", ""]
    return "\n".join(parts)
