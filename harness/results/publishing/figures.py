"""Figures drawn from the leaderboard's tables and the committed files, as SVG.

Every figure is a `Figure`: the data it shows, as plain JSON, and a function
that draws it. The SVG carries a digest of that data (and of `STYLE`) in its
metadata, so `harness leaderboard --check` can tell a stale figure from a
current one without comparing bytes that another matplotlib release would
draw differently.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.results.publishing import FIGURES_DIR

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

STYLE = "1"  # bump when a drawing changes, so every figure counts as stale
DIGEST_KEY = "Identifier"
DIGEST_PREFIX = "harness-figure-data:"


def house_pyplot():
    """pyplot, headless and in the house style, loaded only when a figure is drawn: checking a published
    figure needs its data's digest alone, and matplotlib costs half a second to import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    pyplot.rcParams.update({"svg.hashsalt": "harness", "svg.fonttype": "none", "font.size": 8})
    return pyplot


@dataclass
class Figure:
    path: str  # relative to the results folder
    caption: str
    section: str  # where the markdown links it: a suite, or "curves"
    data: dict[str, Any]
    draw: Callable[[dict[str, Any]], plt.Figure]

    @property
    def digest(self) -> str:
        text = json.dumps({"style": STYLE, "data": self.data}, sort_keys=True, default=float)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def save(figure: Figure, root: Path) -> Path:
    path = Path(root) / figure.path
    path.parent.mkdir(parents=True, exist_ok=True)
    plt = house_pyplot()
    drawn = figure.draw(figure.data)
    drawn.savefig(path, format="svg", bbox_inches="tight",
                  metadata={"Date": None, "Creator": None, DIGEST_KEY: DIGEST_PREFIX + figure.digest})
    plt.close(drawn)
    return path


def committed_digest(path: Path) -> str | None:
    if not path.exists():
        return None
    found = re.search(re.escape(DIGEST_PREFIX) + r"([0-9a-f]+)", path.read_text())
    return found.group(1) if found else None


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


# -- scores per table ------------------------------------------------------------------------------

def scores_figure(suite: str, tasks: dict[str, list[dict[str, Any]]], main_scores: dict[str, str] | None = None
                  ) -> Figure:
    """tasks: task -> [{method, mean, low, high, paper}] in percent; paper or interval may be None.

    main_scores: task -> the score its points show, for tasks ranked by another score than test accuracy."""
    named = dict(main_scores or {})
    what = "test accuracy" if not named else "main scores (" + "; ".join(
        f"{t}: {m}" for t, m in sorted(named.items())) + ("; otherwise test accuracy)" if len(named) < len(tasks)
                                                          else ")")
    data = {"suite": suite, "tasks": tasks} | ({"main_scores": named} if named else {})  # unchanged digest without
    return Figure(f"{FIGURES_DIR}/scores-{slug(suite)}.svg", f"{suite}: {what} with 95% intervals",
                  suite, data, _draw_scores)


def _draw_scores(data: dict[str, Any]) -> plt.Figure:
    plt = house_pyplot()
    tasks = data["tasks"]
    rows = max(len(points) for points in tasks.values())
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 0.8 + 0.32 * rows), squeeze=False)
    for ax, (task, points) in zip(axes[0], tasks.items()):
        y = np.arange(len(points))
        for i, p in enumerate(points):
            if p["mean"] is not None:
                err = None if p["low"] is None else [[p["mean"] - p["low"]], [p["high"] - p["mean"]]]
                ax.errorbar(p["mean"], i, xerr=err, fmt="o", color="C0", capsize=3, markersize=4)
            if p["paper"] is not None:
                ax.plot(p["paper"], i, "x", color="C3", markersize=6)
        ax.set_yticks(y, [p["method"] for p in points])
        ax.invert_yaxis()
        ax.set_title(task)
        ax.set_xlabel(f"{data.get('main_scores', {}).get(task, 'test accuracy')} (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].plot([], [], "o", color="C0", label="ours, 95% t interval")
    axes[0][0].plot([], [], "x", color="C3", label="paper, as reported")
    fig.legend(loc="lower center", ncol=2, bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return fig


# -- average ranks with the critical difference ------------------------------------------------------

def cd_figure(suite: str, ranks: dict[str, float], cd: float, tasks: int) -> Figure:
    data = {"suite": suite, "ranks": {m: round(r, 6) for m, r in sorted(ranks.items())}, "cd": round(cd, 6),
            "tasks": tasks}
    return Figure(f"{FIGURES_DIR}/ranks-{slug(suite)}.svg",
                  f"{suite}: average ranks; methods joined by a bar are within the critical difference",
                  suite, data, _draw_cd)


def cd_groups(ranks: dict[str, float], cd: float) -> list[list[str]]:
    """Maximal runs of methods, in rank order, whose average ranks span less than the critical difference."""
    ordered = sorted(ranks, key=lambda m: ranks[m])
    groups: list[list[str]] = []
    for i, first in enumerate(ordered):
        group = [m for m in ordered[i:] if ranks[m] - ranks[first] < cd]
        if len(group) > 1 and not (groups and set(group) <= set(groups[-1])):
            groups.append(group)
    return groups


def _draw_cd(data: dict[str, Any]) -> plt.Figure:
    plt = house_pyplot()
    ranks, cd = data["ranks"], data["cd"]
    ordered = sorted(ranks, key=lambda m: ranks[m])
    k = len(ranks)
    fig, ax = plt.subplots(figsize=(6.5, 0.9 + 0.28 * k))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(k + 1, -1.5)
    ax.set_yticks([])
    ax.set_xlabel(f"average rank over {data['tasks']} tasks (1 = best)")
    for i, method in enumerate(ordered):
        ax.plot(ranks[method], i, "o", color="C0")
        ax.annotate(f"{method} ({ranks[method]:.2f})", (ranks[method], i), xytext=(6, -3),
                    textcoords="offset points")
    ax.plot([1, 1 + cd], [-1, -1], color="black", linewidth=2)
    ax.annotate(f"critical difference {cd:.2f}", (1, -1), xytext=(0, 4), textcoords="offset points")
    for j, group in enumerate(cd_groups(ranks, cd)):
        rows = [ordered.index(m) for m in group]
        x = min(ranks[m] for m in group) - 0.15 - 0.08 * j
        ax.plot([x, x], [min(rows), max(rows)], color="C2", linewidth=3, alpha=0.7)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


# -- MI diagnostics beside the paper's ----------------------------------------------------------------

def reference_column(display_name: str, part: str, columns) -> str | None:
    """The paper's column for a method's part, if any: "Cross+Self", "Z1" -> "CrossSelf_Z1"."""
    for name in (display_name, display_name.split("-")[0]):
        column = f"{re.sub(r'[^A-Za-z0-9]', '', name)}_{part}"
        if column in columns:
            return column
    return None


def mi_figure(task: str, suite: str, diagnostics: list[dict[str, Any]], paper: pd.DataFrame | None,
              paper_label: str) -> Figure:
    """Ours and the paper's I(Z; w) in bits, one row per (method, part), one column per latent."""
    symbols = diagnostics[0]["symbols"]
    extras = list(dict.fromkeys(r["extra"] for d in diagnostics for r in d["estimates_bits"]))
    columns = [symbols.get(e, e) for e in extras]
    rows, ours, theirs = [], [], []
    for found in diagnostics:
        display = found["method"]["display_name"]
        for part in dict.fromkeys(r["part"] for r in found["estimates_bits"]):
            bits = {r["extra"]: r["bits"] for r in found["estimates_bits"] if r["part"] == part}
            rows.append(f"{display} {part}")
            ours.append([round(bits.get(e, math.nan), 4) for e in extras])
            column = reference_column(display, part, paper.columns) if paper is not None else None
            theirs.append([_paper_bits(paper, column, c) for c in columns])
    data = {"task": task, "columns": columns, "rows": rows, "ours": ours, "paper": theirs,
            "paper_label": paper_label}
    return Figure(f"{FIGURES_DIR}/mi-{slug(task)}.svg", f"{task}: I(Z; latent) in bits, ours beside the paper's",
                  suite, data, _draw_mi)


def _paper_bits(paper: pd.DataFrame | None, column: str | None, symbol: str) -> float | None:
    if paper is None or column is None or symbol not in paper.index or pd.isna(paper.loc[symbol, column]):
        return None
    return float(paper.loc[symbol, column])


def _draw_mi(data: dict[str, Any]) -> plt.Figure:
    plt = house_pyplot()
    ours = np.array(data["ours"], dtype=float)
    paper = np.array([[math.nan if v is None else v for v in row] for row in data["paper"]], dtype=float)
    top = np.nanmax([np.nanmax(ours), np.nanmax(paper) if np.isfinite(paper).any() else 0.0])
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 1.2 + 0.3 * len(data["rows"])), sharey=True)
    for ax, values, title in ((axes[0], ours, "ours"), (axes[1], paper, data["paper_label"])):
        image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=top, aspect="auto")
        ax.set_xticks(range(len(data["columns"])), data["columns"])
        ax.set_yticks(range(len(data["rows"])), data["rows"])
        ax.set_title(title)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "—" if math.isnan(v) else f"{v:.1f}", ha="center", va="center",
                    color="white" if not math.isnan(v) and v < top / 2 else "black")
    fig.colorbar(image, ax=axes, label="bits", shrink=0.8)
    return fig


# -- tuning history and training curves of one pair ---------------------------------------------------

CURVE_METRIC = "val_quick_acc"


def history_figure(history: dict[str, Any], suite: str) -> Figure:
    trials = [{"number": t["number"], "state": t["state"], "value": t["value"]} for t in history["trials"]]
    curves = {seed: [epoch.get(CURVE_METRIC) for epoch in curve] for seed, curve in sorted(history["seeds"].items())}
    data = {"task": history["task"], "method": history["display_name"], "trials": trials, "curves": curves}
    return Figure(f"{FIGURES_DIR}/history/{slug(history['task'])}/{slug(history['method'])}.svg",
                  f"{history['task']} / {history['display_name']}: Optuna trials and per-epoch validation of the "
                  "scored seeds", "curves", data, _draw_history)


def _draw_history(data: dict[str, Any]) -> plt.Figure:
    plt = house_pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 2.6))
    done = [t for t in data["trials"] if t["value"] is not None and t["state"] == "COMPLETE"]
    others = [t for t in data["trials"] if t not in done]
    if done:
        left.plot([t["number"] for t in done], [100 * t["value"] for t in done], "o", label="complete")
        best = np.maximum.accumulate([100 * t["value"] for t in done])
        left.step([t["number"] for t in done], best, where="post", color="C2", label="best so far")
    for t in others:
        left.axvline(t["number"], color="C3", alpha=0.3, linestyle=":")
    left.plot([], [], color="C3", linestyle=":", label="pruned or failed")
    left.set_xlabel("trial")
    left.set_ylabel("validation accuracy (%)")
    left.set_title("tuning")
    left.legend(frameon=False)
    for seed, curve in data["curves"].items():
        points = [(e + 1, 100 * v) for e, v in enumerate(curve) if v is not None]
        if points:
            right.plot(*zip(*points), marker=".", label=f"seed {seed}")
    for axis in (left.xaxis, right.xaxis):
        axis.set_major_locator(plt.MaxNLocator(integer=True))
    right.set_xlabel("epoch")
    right.set_ylabel("quick validation probe (%)")
    right.set_title("scored seeds")
    if right.lines:
        right.legend(frameon=False)
    else:
        right.text(0.5, 0.5, "no training epochs", ha="center", va="center", transform=right.transAxes)
    fig.suptitle(f"{data['task']} / {data['method']}")
    fig.tight_layout()
    return fig
