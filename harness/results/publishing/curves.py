"""The `curve` placeholder of analysis pages (harness.results.publishing.pages): methods' main scores against a
task parameter, one point per task, drawn from the records as a figure (harness.results.publishing.figures).

A point is a method's main score on one task, mean over seeds with its 95% t interval; its x is the value of
the parameter PARAM in that task's records (`task.params`, a dotted path into nested settings, e.g.
`setting.class_word_rate`). Every record of the named methods on a task must hold the same value, or the
figure would place seeds made on other data at one x. With a check, a second panel shows the check's recorded
value per task (mean, min–max over seeds) for the methods whose records carry it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.results import stats
from harness.results.publishing import FIGURES_DIR
from harness.results.publishing.figures import Figure, house_pyplot, slug
from harness.results.publishing.placeholder import Missing, Placeholder
from harness.results.records import Record

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

DIGITS = 6  # what the figure's data keeps of a number: far below any visible difference, stable in its digest


def curve_figure(p: Placeholder, cell: Callable[[str, str], pd.DataFrame], records: list[Record]
                 ) -> tuple[Figure | None, list[str]]:
    """The figure of `{{curve TASKS METHODS PARAM [check=CHECK]}}` and what it leaves out (`no records of M on T`).

    `cell(task, method)` gives the leaderboard's scored rows of a cell or raises Missing; `records` are the
    folder's ok records. No figure (None) when no method has records on any task."""
    tasks, methods, param = p.args[0].split(","), p.args[1].split(","), p.args[2]
    ours = [r for r in records if r.task["name"] in tasks and r.method["name"] in methods]
    xs = {task: x for task in tasks if (x := _x(p, task, param, [r for r in ours if r.task["name"] == task]))
          is not None}
    points, missing, scores = {}, [], set()
    for method in methods:
        points[method] = []
        for task in tasks:
            try:
                found = cell(task, method)
            except Missing:
                missing.append(f"no records of {method} on {task}")
                continue
            scores.add(found.main_score.iloc[0])
            interval = stats.t_interval(found.score.tolist())
            points[method].append({"task": task, "x": xs[task], "n": interval.n, **{
                k: _kept(100 * v) for k, v in (("mean", interval.mean), ("low", interval.low),
                                               ("high", interval.high))}})
        points[method].sort(key=lambda point: point["x"])
    if len(scores) > 1:
        raise p.error(f"the tasks' main scores differ ({', '.join(sorted(scores))}): one axis cannot show them",
                      "name tasks that share their main score")
    if not scores:
        return None, missing
    data = {"param": param, "score": scores.pop(), "points": points}
    if "check" in p.options:
        data |= {"check": p.options["check"], "checked": _check_points(p, p.options["check"], ours, xs)}
    name = hashlib.sha256(json.dumps([p.args, p.options], sort_keys=True).encode()).hexdigest()[:10]
    page = slug(p.page.rpartition("/")[2].removesuffix(".md"))
    return Figure(f"{FIGURES_DIR}/pages/{page}/curve-{slug(param)}-{name}.svg", _caption(data, missing), "pages",
                  data, _draw), missing


def param_value(params: dict[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) of a dotted path into a record's task parameters."""
    value: Any = params
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _leaves(params: Any, prefix: str = "") -> list[str]:
    if not isinstance(params, dict):
        return [prefix] if prefix else []
    return [leaf for key, value in sorted(params.items()) for leaf in _leaves(value, f"{prefix}{key}.")]


def _x(p: Placeholder, task: str, param: str, found: list[Record]) -> float | None:
    """The parameter's one value over the task's records (None without records); an error if any lacks it,
    holds no number, or they disagree."""
    values: dict[Any, list[str]] = {}
    for r in found:
        held, value = param_value(r.task.get("params") or {}, param)
        where = f"{r.method['name']} seed {r.seed}"
        if not held:
            known = ", ".join(leaf.rstrip(".") for leaf in _leaves(r.task.get("params") or {})) or "none"
            raise p.error(f"the record of {where} on {task} has no task parameter {param!r} (it has: {known})",
                          "name a parameter every record of these tasks holds, dotted for a nested one")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise p.error(f"the task parameter {param} of {task} is {value!r}, not a number", "name a numeric one")
        values.setdefault(value, []).append(where)
    if len(values) > 1:
        said = "; ".join(f"{value} ({', '.join(where)})" for value, where in values.items())
        raise p.error(f"the records of {task} disagree on {param}: {said}",
                      "rerun the records made on the other setting, or leave the task out")
    return float(next(iter(values))) if values else None


def _check_points(p: Placeholder, check: str, found: list[Record], xs: dict[str, float]) -> dict[str, list[dict]]:
    """Per method whose records carry a value of the check: per task, the value's mean, min and max over seeds."""
    if not any(check in r.checks for r in found):
        known = sorted({c for r in found for c in r.checks}) or ["(none: these records carry no checks)"]
        raise p.error(f"no record of {p.args[1]} on {p.args[0]} has the check {check!r}",
                      f"use one of {', '.join(known)}")
    points: dict[str, list[dict]] = {}
    for method in p.args[1].split(","):
        for task in sorted(xs, key=xs.get):
            values = [r.checks[check]["value"] for r in found if r.method["name"] == method
                      and r.task["name"] == task and r.checks.get(check, {}).get("value") is not None]
            if values:
                points.setdefault(method, []).append({
                    "task": task, "x": xs[task], "n": len(values), "mean": _kept(sum(values) / len(values)),
                    "min": _kept(min(values)), "max": _kept(max(values))})
    return points


def _kept(value: float) -> float | None:
    return None if math.isnan(value) else round(value, DIGITS)


def _caption(data: dict[str, Any], missing: list[str]) -> str:
    methods = ", ".join(data["points"])
    said = (f"{data['score']} (%) of {methods} against the task parameter {data['param']}: mean over seeds "
            "with its 95% t interval")
    if "check" in data:
        said += (f"; right, the check {data['check']}'s recorded value (mean, min–max over seeds) of "
                 f"{', '.join(data['checked']) or 'no method (none recorded a value)'}")
    return said + "".join(f"; {m}" for m in missing)


def _draw(data: dict[str, Any]) -> plt.Figure:
    plt = house_pyplot()
    panels = 2 if "check" in data else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.0), squeeze=False)
    xs = sorted({point["x"] for points in data["points"].values() for point in points})
    span = (xs[-1] - xs[0]) or 1.0
    for i, (method, points) in enumerate(data["points"].items()):
        shift = (i - (len(data["points"]) - 1) / 2) * 0.012 * span  # side by side, so bars at one x stay apart
        _series(axes[0][0], [(pt["x"] + shift, pt["mean"], pt["low"], pt["high"]) for pt in points], method, i)
    axes[0][0].set_ylabel(f"{data['score']} (%)")
    axes[0][0].set_title("main score, 95% t interval over seeds")
    if panels == 2:
        methods = list(data["points"])
        for method, points in data["checked"].items():
            _series(axes[0][1], [(pt["x"], pt["mean"], pt["min"], pt["max"]) for pt in points], method,
                    methods.index(method))
        axes[0][1].set_ylabel(data["check"])
        axes[0][1].set_title(f"check {data['check']}: mean, min–max over seeds")
        if not data["checked"]:
            axes[0][1].text(0.5, 0.5, "no recorded values", ha="center", va="center",
                            transform=axes[0][1].transAxes)
    for ax in axes[0]:
        ax.set_xlabel(data["param"])
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def _series(ax, points: list[tuple[float, float, float | None, float | None]], label: str, color: int) -> None:
    """One method's points joined in x order, each with its bar from low to high where it has one."""
    if not points:
        return
    x, y = [pt[0] for pt in points], [pt[1] for pt in points]
    below = [0.0 if pt[2] is None else pt[1] - pt[2] for pt in points]
    above = [0.0 if pt[3] is None else pt[3] - pt[1] for pt in points]
    ax.errorbar(x, y, yerr=np.array([below, above]), fmt="o-", color=f"C{color}", capsize=3, markersize=4,
                label=label)
