"""Records and the papers' numbers -> the tidy tables the leaderboard is built from (harness.results.leaderboard).

Reading is apart from summarizing and rendering: every record of the folders read (overlaid with --with,
harness.results.overlay) becomes one row, a cell whose seeds mix two run identities is refused here, before
any table is made, and sources.toml gives the papers' reported numbers and each suite's settings.
Imports no torch.
"""

from __future__ import annotations

import csv
import io
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.api.checks import check_state
from harness.api.errors import HarnessError
from harness.results.encoders import EncoderFacts, encoder_of
from harness.results.identity import differences, task_setting
from harness.results.overlay import Folders
from harness.results.protocol_marks import KEYS
from harness.results.records import Record, read_records, record_path

METRIC = "test_acc"  # a task's main score unless it declares another (Task.main_score, carried in its records)
DIRTY_SUFFIX = "-dirty"


@dataclass(frozen=True)
class Reported:
    value: float
    source: str


def load_results(root: Path, source: str = "", published: bool = False, order: int = 0,
                 facts: EncoderFacts = EncoderFacts()) -> pd.DataFrame:
    """One row per record. `source` names the folder, `published` says it was overlaid (--with) and `order`
    is its place among the folders (0: the one the outputs go to); a single folder needs none of them.
    `facts` say which records made before records named their trained encoder share one
    (harness.results.encoders); without them each such record's encoder counts apart."""
    rows = []
    records = list(read_records(root))
    refuse_mixed_identities(root, records)
    for r in records:
        main = r.task.get("main_score", METRIC)
        rows.append({
            "suite": r.task.get("suite", "misc"), "task": r.task["name"], "method": r.method["name"],
            "display": r.method["display_name"], "name": r.method["display_name"], "source": source,
            "published": published, "order": order, "seed": r.seed, "status": r.status, "reason": r.reason,
            "score": r.metrics.get(main), "f1": r.metrics.get("test_f1"), "main_score": main,
            "side": {name: r.metrics.get(name) for name in r.task.get("side_scores", [])},
            # The task's version and parameters: two rows of one column made on different data never pair.
            "task_setting": task_setting(r.task),
            "epochs": r.protocol.get("epochs"), "trials": r.protocol.get("trials"),
            "batch_size": r.protocol.get("batch_size"),
            **{f"protocol_{key}": r.protocol.get(key) for key in KEYS},
            "hparams": r.hparams, "run_id": r.mlflow_run_id, "mlflow_server": r.environment.get("mlflow_server"),
            "hardware": r.environment.get("hardware"), "device": r.environment.get("device"),
            "torch": r.environment.get("torch"), "harness": r.environment.get("harness"),
            "commit": r.environment.get("git_commit"), "finished_at": r.finished_at,
            "wall_time_s": r.wall_time_s,
            "encoder": encoder_of(r, facts), "checked": bool(r.checks),
            "check_failed": any(check_state(c) == "violated" for c in r.checks.values()),
            "check_unmeasurable": any(check_state(c) == "not measurable" for c in r.checks.values()),
            "dirty": str(r.environment.get("git_commit") or "").endswith(DIRTY_SUFFIX),
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
                    f"a leaderboard cell takes one: rerun the pair into this folder with the settings of the seeds "
                    f"to keep (`harness run --method {method} --task {task} --results {root} --force` and those "
                    f"settings; the replaced records are kept in {a.parent / 'replaced'}/), or move the others out")


def load_reported(reference_dir: Path) -> tuple[dict[tuple[str, str], Reported], dict[str, str]]:
    """(task, method table name) -> reported score, and task -> suite for the reported tasks."""
    try:
        return _read_reported(reference_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # TOML and number errors are ValueErrors
        raise HarnessError(f"{reference_dir}: the papers' reported numbers cannot be read ({type(exc).__name__}: "
                           f"{exc}); restore them (git checkout {reference_dir}) or fix sources.toml") from None


def _read_reported(reference_dir: Path) -> tuple[dict[tuple[str, str], Reported], dict[str, str]]:
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
    """sources.toml's per-suite `[notes]` (lines printed under a table), `[paired]` (the baseline to pair with),
    `[controls]` (further rows to pair with) and `[reference]` (the row others are flagged above)."""
    path = reference_dir / "sources.toml"
    settings = tomllib.loads(path.read_text()) if path.exists() else {}
    return {key: settings.get(key, {}) for key in ("notes", "paired", "controls", "reference")}


def load_folders(where: Folders, facts: EncoderFacts = EncoderFacts()) -> pd.DataFrame:
    """Every folder's records in one table; while folders are overlaid each row is named with its folder."""
    frames = [load_results(f.path, f.label, f.published, i, facts) for i, f in enumerate(where.all)]
    if frames[0].empty:
        root = where.root.path
        raise HarnessError(f"no result records under {root / 'records'}; run `harness run --method ... --task ... "
                           f"--results {root}` first, or give the --results folder that holds them")
    results = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    if where.overlaid:
        results["display"] = [where.row_name(n, s) for n, s in zip(results.name, results.source)]
    return results


def reported_beside(where: Folders) -> tuple[dict[tuple[str, str], Reported], dict[str, str]]:
    """load_reported, keyed by the rows the papers' numbers stand beside: while folders are overlaid, the rows
    of the folder the numbers were published with."""
    reported, suites = load_reported(where.reference())
    return {(t, where.row_name(m, where.reference_label())): v for (t, m), v in reported.items()}, suites
