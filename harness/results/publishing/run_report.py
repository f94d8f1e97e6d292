"""What a `harness run` leaves for each pair beyond its records, and the table it ends with.

For each pair: its history file and history figure under the results folder,
and on its MLflow parent run the final metrics over seeds, the best
configuration and that figure. At the end: a small table of every pair's
result and where the records, the MLflow runs and the figures went.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from harness.results import stats
from harness.results.publishing import FIGURES_DIR
from harness.results.publishing.history import read_history, write_history
from harness.results.records import read_records

log = logging.getLogger(__name__)
METRIC = "test_acc"


@dataclass
class PairOutcome:
    task: str
    method: str
    message: str
    parent_run_id: str | None = None
    figure: Path | None = None


def nothing_to_train(key: str) -> str:
    """What a run says of a pair whose seed records already stand for it."""
    return f"{key}: nothing to train (its seed records stand for this run; --force reruns)"


def main_score(record) -> str:
    """The metric a record's task is ranked by (Task.main_score, carried in the record's task)."""
    return record.task.get("main_score", METRIC)


def pair_interval(results: Path, task: str, method: str, metric: str | None = None) -> stats.Interval | None:
    """The pair's `metric` over its seeds; by default its task's main score."""
    records = [r for r in read_records(results)
               if r.task["name"] == task and r.method["name"] == method and r.status == "ok"]
    scores = [r.metrics[metric or main_score(r)] for r in records if (metric or main_score(r)) in r.metrics]
    return stats.t_interval(scores) if scores else None


def pair_main_score(results: Path, task: str, method: str) -> str:
    return next((main_score(r) for r in read_records(results)
                 if r.task["name"] == task and r.method["name"] == method and r.status == "ok"), METRIC)


def over_seeds(interval: stats.Interval, metric: str = METRIC) -> dict[str, float]:
    """The parent run's summary metrics; no interval bounds from a single seed (the seeds' count is a tag)."""
    metrics = {f"{metric}_mean": interval.mean}
    if interval.n > 1:
        metrics |= {f"{metric}_ci95_low": interval.low, f"{metric}_ci95_high": interval.high}
    return metrics


def keep_history(results: Path, task: str, method: str, display_name: str, study: str | None,
                 trials: list[dict[str, Any]], curves: dict[int, list[dict[str, float]]]) -> Path:
    """Write the pair's history file and draw its figure; returns the figure's path."""
    from harness.results.publishing import figures  # matplotlib: only where a figure is drawn

    history_file = write_history(results, task, method, display_name, study, trials, curves)
    spec = figures.history_figure(read_history(history_file), suite="curves")
    return figures.save(spec, results)


# MLflow 3.17's UI opens an experiment on its GenAI view unless the URL (or a switch the browser remembers)
# asks for the model-training view; it does not pick the view from the experiment's kind tag.
RUNS_VIEW = "http://127.0.0.1:5000/#/experiments/{id}/runs?workflowType=machine_learning"


def summary_table(outcomes: list[PairOutcome], results: Path, tracking_uri: str,
                  experiments: dict[str, str] | None = None) -> str:
    """experiments: MLflow experiment name -> id, for the links that open each on its runs."""
    rows, names = [], []
    for outcome in outcomes:
        names.append(pair_main_score(results, outcome.task, outcome.method))
        interval = pair_interval(results, outcome.task, outcome.method)
        if interval is None:
            score = "-"
        elif interval.n == 1:
            score = f"{100 * interval.mean:.2f} (1)"
        else:
            score = f"{100 * interval.mean:.2f} ± {100 * interval.half_width:.2f} ({interval.n})"
        rows.append([outcome.task, outcome.method, score, outcome.parent_run_id or "-",
                     str(outcome.figure) if outcome.figure else "-"])
    if all(name == METRIC for name in names):
        headers = ["task", "method", "test acc % (95% CI, seeds)", "MLflow parent run", "figure"]
    else:  # a task ranked by another score: each row names the score it shows
        headers = ["task", "method", "score", "% (95% CI, seeds)", "MLflow parent run", "figure"]
        rows = [row[:2] + [name] + row[2:] for row, name in zip(rows, names)]
    table = tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
    links = [f"          {name}: {RUNS_VIEW.format(id=i)}" for name, i in sorted((experiments or {}).items())]
    return "\n".join([
        table, "",
        f"records:  {Path(results) / 'records'}/",
        f"MLflow:   mlflow ui --backend-store-uri {tracking_uri}" + (", then open" if links else ""),
        *links,
        f"figures:  {Path(results) / FIGURES_DIR}/  (`harness leaderboard --results {results}` draws "
        "the tables' figures and the web page too)",
    ])
