"""`harness leaderboard`: the markdown, the figures and the web page, from one set of tables."""

from __future__ import annotations

import json
import logging
import math
import tomllib
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from harness.results.claims import load_claims
from harness.results.encoders import EncoderFacts
from harness.results.leaderboard import Table, build, compose, main_scores, summarize
from harness.results.loading import METRIC, Reported, reported_beside
from harness.results.overlay import Folders, folders
from harness.results.publishing import figures as fig
from harness.results.publishing.history import all_histories
from harness.results.publishing.claims_page import CLAIMS_MARKDOWN, claims_html, claims_markdown, with_link
from harness.results.publishing.page import PAGE_FILE, render_page
from harness.results.publishing.pages import orphans, render_pages
from harness.results.verdicts import evaluate

log = logging.getLogger(__name__)
MARKDOWN_FILE = "LEADERBOARD.md"
DIAGNOSTICS_DIR = "diagnostics"


def publish(root: Path, check: bool = False, overlays: list[Path] | tuple[Path, ...] = (),
            facts: Callable[[], EncoderFacts] | None = None) -> list[str]:
    """Write (or, with check, compare) everything; returns the paths that are out of date.

    `overlays` are further folders whose records are shown beside root's (harness.results.overlay); they are
    only read: everything is written under root. `facts` gives what says which records share a trained
    encoder, for records made before they named it (the command reads it from the code's index); without it
    each such record's encoder counts apart. The claims (CLAIMS.md, the page's section, the link from LEADERBOARD.md)
    appear only where a claims file exists, and are judged on root's records alone. Each template root/pages/NAME.md
    renders to root/NAME.md (harness.results.publishing.pages); a bad placeholder stops everything before a write."""
    root = Path(root)
    where = folders(root, overlays)
    known = facts() if facts else EncoderFacts()
    results, tables = build(where, known)
    reserved = {MARKDOWN_FILE, CLAIMS_MARKDOWN, PAGE_FILE}
    pages, warnings, page_figures = render_pages(root, results, tables, known, reserved)
    for warning in warnings:
        log.warning(warning)
    claims = load_claims(root)
    outcomes = evaluate(root, claims, known) if claims else []
    specs = figure_specs(where, results, tables)
    stale = _figures(root, specs + page_figures, check)  # the pages link their own figures, not the leaderboard
    links: dict[str, list[tuple[str, str]]] = {}
    for spec in specs:
        links.setdefault(spec.section, []).append((spec.caption, spec.path))
    markdown = compose(results, tables, links, origin=where.describe())
    outputs = {MARKDOWN_FILE: with_link(markdown) if claims else markdown,
               PAGE_FILE: render_page(where, results, tables, specs, claims_html(outcomes) if claims else "")}
    if claims:
        outputs[CLAIMS_MARKDOWN] = claims_markdown(outcomes)
    outputs |= pages
    for name, text in outputs.items():
        path = root / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
    for path in orphans(root):
        if check:
            stale.append(f"{path} (its template pages/{path.name} is gone)")
        else:
            path.unlink()
    return stale


def _figures(root: Path, specs: list[fig.Figure], check: bool) -> list[str]:
    stale = [str(root / s.path) for s in specs if fig.committed_digest(root / s.path) != s.digest]
    wanted = {(root / s.path).resolve() for s in specs}
    extra = [p for p in sorted((root / fig.FIGURES_DIR).rglob("*.svg")) if p.resolve() not in wanted]
    if check:
        return stale + [f"{p} (no longer drawn)" for p in extra]
    for spec in specs:
        if str(root / spec.path) in stale:
            fig.save(spec, root)
    for path in extra:
        path.unlink()
    return []


def figure_specs(where: Folders, results: pd.DataFrame, tables: list[Table]) -> list[fig.Figure]:
    root = where.root.path
    reported, _ = reported_beside(where)
    summaries = summarize(results)
    suite_of = dict(zip(results.task, results.suite))
    specs = []
    for table in tables:
        points = _score_points(table, summaries, reported)
        if points:
            named = {t: m for t, m in main_scores(results).items() if t in points and m != METRIC}
            specs.append(fig.scores_figure(table.suite, points, named))
        if table.critical_difference is not None:
            cd = table.critical_difference
            specs.append(fig.cd_figure(table.suite, cd.average_ranks, cd.cd, cd.tasks))
    specs += _mi_specs(root, where.reference(), suite_of)
    for history in all_histories(root):
        specs.append(fig.history_figure(history, suite_of.get(history["task"], "misc")))
    return specs


def _score_points(table: Table, summaries, reported: dict[tuple[str, str], Reported]) -> dict[str, list[dict]]:
    """Per task with at least one run of ours: every row with a score of ours or the paper's, in percent."""
    points: dict[str, list[dict]] = {}
    methods = [row[0].text for row in table.rows]
    for task in table.tasks:
        if not any((task, m) in summaries for m in methods):
            continue
        points[task] = []
        for method in methods:
            summary, hit = summaries.get((task, method)), reported.get((task, method))
            if summary is None and hit is None:
                continue
            interval = summary.interval if summary else None
            spread = interval is not None and not math.isnan(interval.low)
            points[task].append({
                "method": method, "mean": round(100 * interval.mean, 4) if interval else None,
                "low": round(100 * interval.low, 4) if spread else None,
                "high": round(100 * interval.high, 4) if spread else None,
                "paper": round(100 * hit.value, 4) if hit else None})
    return points


def _mi_specs(root: Path, reference: Path, suite_of: dict[str, str]) -> list[fig.Figure]:
    """One heatmap per diagnosed task; the paper's values from the `[[diagnostics]]` entries of sources.toml."""
    config = reference / "sources.toml"
    references = tomllib.loads(config.read_text()).get("diagnostics", []) if config.exists() else []
    specs = []
    for task_dir in sorted((root / DIAGNOSTICS_DIR).glob("*/")):
        found = [json.loads(p.read_text()) for p in sorted(task_dir.glob("*.json"))]
        if not found:
            continue
        task = task_dir.name
        entry = next((r for r in references if r["task"] == task), None)
        paper = (pd.read_csv(reference / entry["file"], comment="#").set_index("latent")
                 if entry else None)
        specs.append(fig.mi_figure(task, suite_of.get(task, "misc"), found, paper,
                                   entry["label"] if entry else "paper"))
    return specs
