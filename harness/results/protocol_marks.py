"""Which cells were run under another protocol than their column's, and how they differ. Imports no torch.

A cell's protocol is its records' epochs, trial budget, number of seeds, batch size and ranks
(harness.results.identity's protocol keys). A column's protocol is that of its published rows (those
of the folders overlaid with --with), or, with none there, the one most of its rows share; with no
majority, every row of the column is off it. A row that trains nothing records 0 epochs and 0 trials:
it has no epoch or trial budget to differ in, so only its seeds, batch size and ranks are compared.

A marked cell is shown, never ranked: it takes no part in the best, the ties or the average rank.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from harness.results.identity import ONE_PROCESS, PROTOCOL_KEYS, WORLD_SIZE

OFF_PROTOCOL = "≠"
KEYS = (*PROTOCOL_KEYS, WORLD_SIZE)
_BUDGET = ("epochs", "trials")  # what a row that trains nothing has none of
_WORDS = {"epochs": "{} epochs", "trials": "{} trials", "seeds": "{} seeds", "batch_size": "batch {}",
          WORLD_SIZE: "{} rank(s)"}


def protocol_of(row) -> dict:
    """A record's protocol, as the leaderboard's tidy table holds it (`protocol_*` columns)."""
    values = {key: None if pd.isna(row[f"protocol_{key}"]) else row[f"protocol_{key}"] for key in KEYS}
    return values | {WORLD_SIZE: values[WORLD_SIZE] or ONE_PROCESS}


def _compared(a: dict, b: dict) -> list[str]:
    trains = bool(a["epochs"]) and bool(b["epochs"])
    return [k for k in KEYS if trains or k not in _BUDGET]


def _differs(a: dict, b: dict) -> list[str]:
    return [k for k in _compared(a, b) if a[k] != b[k]]


def _alike(protocol: dict, expected: list[dict]) -> list[dict]:
    """The column's protocols a cell is held to: those of rows that train if it trains, of rows that train
    nothing if it does not; all of them where the column has none of its kind."""
    return [e for e in expected if bool(e["epochs"]) == bool(protocol["epochs"])] or expected


def _words(protocol: dict, keys) -> str:
    return ", ".join(_WORDS[k].format(_show(protocol[k])) for k in keys)


def _show(value) -> str:
    return "none" if value is None else str(int(value)) if float(value).is_integer() else str(value)


def column_protocols(cells: list[tuple[dict, bool]]) -> tuple[list[dict], str]:
    """The protocols a column's cells are held to, and whose they are, from (protocol, published) per cell."""
    published = [p for p, is_published in cells if is_published]
    if published:
        return _distinct(published), "published rows"
    trained = [p for p, _ in cells if p["epochs"]] or [p for p, _ in cells]
    counts = Counter(tuple(sorted(p.items(), key=lambda kv: kv[0])) for p in trained).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return [], "rows share no majority protocol"
    return [dict(counts[0][0])], "majority"


def _distinct(protocols: list[dict]) -> list[dict]:
    seen: list[dict] = []
    for p in protocols:
        if p not in seen:
            seen.append(p)
    return seen


def protocol_marks(results: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(task, row) -> why the cell is off its column's protocol, for every such scored cell."""
    ok = results[(results.status == "ok") & results.score.notna()] if len(results) else results
    marks: dict[tuple[str, str], str] = {}
    for task, in_task in ok.groupby("task"):
        cells = {display: (protocol_of(group.iloc[0]), bool(group.published.iloc[0]))
                 for display, group in in_task.groupby("display", sort=False)}
        expected, whose = column_protocols(list(cells.values()))
        for display, (protocol, _) in cells.items():
            if any(not _differs(protocol, e) for e in _alike(protocol, expected)):
                continue
            marks[(task, display)] = _explain(protocol, expected, whose)
    return marks


def _explain(protocol: dict, expected: list[dict], whose: str) -> str:
    if not expected:
        shown = [k for k in _compared(protocol, protocol) if k != WORLD_SIZE or protocol[k] != ONE_PROCESS]
        return f"{_words(protocol, shown)}; the column's {whose}"
    nearest = min(_alike(protocol, expected), key=lambda e: len(_differs(protocol, e)))
    keys = _differs(protocol, nearest)
    return f"{_words(protocol, keys)}; the column's {whose}: {_words(nearest, keys)}"
