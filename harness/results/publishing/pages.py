"""Analysis pages whose figures come from the records: `pages/NAME.md` templates rendered to `NAME.md`.

A records folder may hold `pages/*.md`, prose written by hand; `harness leaderboard` renders each to `NAME.md`
beside LEADERBOARD.md (and `--check` reports it stale like any other output), so no figure in the prose is typed.
A placeholder is `{{kind ARG ... option=value}}` on one line; markdown never uses `{{`, so any `{{` opens one.
The kinds (TASK and METHOD are the names in the records, e.g. `synthetic factorcl-ssl`; TASKS and METHODS are
comma lists of them without spaces, each name once):

- `{{score TASK METHOD}}`: the task's main score as its leaderboard cell shows it, mean ± 95% t half-width (seeds),
  percent, with the cell's marks.
- `{{seeds TASK METHOD}}`: the main score of each seed, percent, in seed order: `96.48, 96.18 (seeds 0, 1)`.
- `{{paired TASKS A B family=NAME}}`: A's main score minus B's over the seeds both have (with the same epochs and
  batch size on the same task version, as the leaderboard pairs them), in points: mean [95% t interval] (paired
  seeds) and the paired t-test's two-sided p, Holm-corrected over every `paired` placeholder of family NAME in
  the page (the same comparison written twice counts once); without family= the p is uncorrected and says so; one
  paired seed gives no p. TASKS may be a comma list (e.g. one task's variants with other label assignments):
  seeds pair within each task as above, and the pairs of all of them are pooled into one comparison (one member
  of its family) that says `N pairs over K tasks`; every task must contribute pairs.
- `{{history TASK METHOD KEY epoch=N digits=D}}`: the per-epoch value KEY of `history/TASK/METHOD.json` at epoch N
  (1 is the first; default the last every seed has), mean over seeds (min–max, seeds), D decimals (default 2).
- `{{check TASKS METHOD CHECK}}`: how the records' check CHECK came out, per state (failed, not measurable, held,
  not recorded), counting seeds and distinct trained encoders (records that share one count once; TASKS may be a
  comma list, e.g. tasks that share inputs), and the causes the details name as `cause: ...;`.
- `{{checkvalue TASK METHOD CHECK digits=D}}`: the check's recorded value, mean over seeds (min–max, seeds).
- `{{encoders TASK METHOD}}`: the cell's distinct trained encoders and the other cells (task/method) holding them.
- `{{curve TASKS METHODS PARAM check=CHECK}}`: a figure (harness.results.publishing.curves), linked with its
  caption: each method's main score, mean with its 95% t interval over seeds, against the task parameter PARAM
  (a dotted path into the records' `task.params`, e.g. `setting.class_word_rate`), one point per task, a
  method's points joined in x order; with check=, a second panel shows the check's recorded value (mean,
  min–max over seeds) for the methods that record it. `harness leaderboard` writes it to
  `figures/pages/NAME/curve-PARAM-DIGEST.svg` (DIGEST: of the placeholder's arguments) and `--check` finds it
  stale when its data changes, like the leaderboard's figures. A task whose records lack PARAM, hold no number
  there or disagree on it is an error; a method without records on a task leaves that point out and is warned
  about.

A placeholder whose records are missing renders `(no records of METHOD on TASK)` and is warned about; an unknown
kind, a wrong number of arguments, an unknown option, check or history key is an error naming page:line, and
nothing is written. A generated page whose template was removed is stale (--check) or deleted. Pages read the
records of the folder they are in (not the folders overlaid with --with), except that a score's marks are the
leaderboard's.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.api.checks import check_state
from harness.api.errors import HarnessError
from harness.results import stats
from harness.results.encoders import EncoderFacts, encoder_of
from harness.results.leaderboard import Table, cell_text, summarize
from harness.results.paired import compared, seed_pairs
from harness.results.publishing.curves import curve_figure
from harness.results.publishing.figures import Figure
from harness.results.publishing.history import history_path, read_history
from harness.results.publishing.placeholder import Missing, Placeholder
from harness.results.records import Record, read_records

PAGES_DIR = "pages"
GENERATED = "_Generated from "  # how a generated page's first line opens: what tells it from a hand-written file
PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
CAUSE = re.compile(r"cause: ([^;]+)")
# kind -> (positional arguments, options it takes)
KINDS = {"score": (("TASK", "METHOD"), ()), "seeds": (("TASK", "METHOD"), ()),
         "paired": (("TASKS", "A", "B"), ("family",)), "history": (("TASK", "METHOD", "KEY"), ("epoch", "digits")),
         "check": (("TASKS", "METHOD", "CHECK"), ()), "checkvalue": (("TASK", "METHOD", "CHECK"), ("digits",)),
         "encoders": (("TASK", "METHOD"), ()), "curve": (("TASKS", "METHODS", "PARAM"), ("check",))}
LISTS = {"TASKS", "METHODS"}  # arguments that take a comma list
STATES = (("violated", "failed"), ("not measurable", "not measurable"), ("held", "held"), (None, "not recorded"))


def render_pages(root: Path, results: pd.DataFrame, tables: list[Table], facts: EncoderFacts,
                 reserved: set[str]) -> tuple[dict[str, str], list[str], list[Figure]]:
    """{output file name: text} for every template in root/pages/, one warning per placeholder whose
    records are missing (or per point a curve leaves out), and the figures the pages' curves show (not yet
    drawn: the caller saves them). `results` and `tables` are the leaderboard's (harness.results.leaderboard.build)."""
    templates = sorted((Path(root) / PAGES_DIR).glob("*.md"))
    if not templates:
        return {}, [], []
    reader = Reader(Path(root), results[results.order == 0], results, tables, facts)
    outputs, warnings = {}, []
    for template in templates:
        if template.name in reserved:
            raise HarnessError(f"{template}: its page would overwrite {template.name}, which `harness leaderboard` "
                               "writes itself; rename the template")
        text, missing = render_page(f"{PAGES_DIR}/{template.name}", template.read_text(), reader)
        outputs[template.name] = text
        warnings += missing
    return outputs, warnings, reader.figures


def render_page(name: str, template: str, reader: Reader) -> tuple[str, list[str]]:
    """The page's text, and a warning per placeholder whose records are missing."""
    lines = template.splitlines(keepends=True)
    found = []
    for number, line in enumerate(lines, 1):
        if "{{" in PLACEHOLDER.sub("", line):
            raise HarnessError(f"{name}:{number}: a `{{{{` that opens no placeholder (unclosed, or with a brace "
                               "inside); write `{{kind ARG ...}}` on one line")
        found += [parse(name, number, match.group(0)) for match in PLACEHOLDER.finditer(line)]
    corrected = holm_by_family(found, reader)
    rendered, warnings = [], []
    for placeholder in found:
        try:
            rendered.append(reader.render(placeholder, corrected))
        except Missing as missing:
            rendered.append(f"({missing})")
            warnings.append(f"{name}:{placeholder.line}: {placeholder.text}: {missing}; the page says so")
        warnings += [f"{name}:{placeholder.line}: {placeholder.text}: {gap}; the figure leaves that point out"
                     for gap in reader.absent]
        reader.absent = []
    texts = iter(rendered)  # in the order the placeholders were found: line by line, left to right
    body = "".join(PLACEHOLDER.sub(lambda _: next(texts), line) for line in lines)
    return (f"{GENERATED}[`{name}`]({name}) by `harness leaderboard`, every figure from the records; "
            f"edit that template, not this file._\n\n{body}"), warnings


def orphans(root: Path) -> list[Path]:
    """Pages this command generated whose template is gone: like a figure no longer drawn, they are stale."""
    found = []
    for path in sorted(Path(root).glob("*.md")):
        with path.open() as lines:
            first = lines.readline()
        if first.startswith(GENERATED) and not (Path(root) / PAGES_DIR / path.name).exists():
            found.append(path)
    return found


def parse(page: str, line: int, text: str) -> Placeholder:
    words = text[2:-2].split()
    bare = Placeholder(page, line, text, "", (), {})
    if not words or words[0] not in KINDS:
        raise bare.error(f"unknown kind {words[0] if words else '(none)'!r}", f"use one of {', '.join(KINDS)}")
    kind, rest = words[0], words[1:]
    wanted, allowed = KINDS[kind]
    args = tuple(w for w in rest if "=" not in w)
    options = dict(w.split("=", 1) for w in rest if "=" in w)
    placeholder = Placeholder(page, line, text, kind, args, options)
    usage = f"write {{{{{kind} {' '.join(wanted)}{''.join(f' [{o}=...]' for o in allowed)}}}}}"
    if len(args) != len(wanted):
        raise placeholder.error(f"{kind} takes {len(wanted)} arguments, not {len(args)}", usage)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise placeholder.error(f"{kind} takes no option {unknown[0]!r}", usage)
    for option in set(options) & {"epoch", "digits"}:
        if not options[option].isdigit() or (option == "epoch" and int(options[option]) < 1):
            raise placeholder.error(f"{option}={options[option]} is not a whole number"
                                    + (" from 1" if option == "epoch" else ""), usage)
    for name, value in zip(wanted, args):
        parts = value.split(",")
        if name in LISTS and ("" in parts or len(set(parts)) < len(parts)):  # a repeated task would count twice
            raise placeholder.error(f"{name} {value} has an empty or repeated entry",
                                    f"name each {name[:-1].lower()} once, comma-separated without spaces")
    if kind == "paired" and args[1] == args[2]:
        raise placeholder.error(f"compares {args[1]} with itself", "name two different methods")
    return placeholder


def holm_by_family(found: list[Placeholder], reader: Reader) -> dict[tuple, tuple[float, int]]:
    """(family, task, a, b) -> (Holm-corrected p, tested comparisons in the family), for the page's paired
    placeholders that name a family; a comparison written twice is one test."""
    families: dict[str, list[tuple]] = {}
    for p in found:
        if p.kind == "paired" and "family" in p.options:
            members = families.setdefault(p.options["family"], [])
            if p.args not in members:
                members.append(p.args)
    corrected = {}
    for family, members in families.items():
        raw = [reader.paired_p(*args) for args in members]
        tested = sum(not math.isnan(p) for p in raw)
        for args, adjusted in zip(members, stats.holm(raw)):
            corrected[(family, *args)] = (adjusted, tested)
    return corrected


@dataclass
class Reader:
    """The records one page reads: the leaderboard's tidy table (its folder's rows, `ours`) and the records."""

    root: Path
    ours: pd.DataFrame
    everything: pd.DataFrame  # with the folders overlaid, for the leaderboard's marks
    tables: list[Table]
    facts: EncoderFacts
    _records: list[Record] | None = None
    figures: list[Figure] = field(default_factory=list)  # drawn by the page's curve placeholders
    absent: list[str] = field(default_factory=list)  # what the last placeholder left out: warned about

    def render(self, p: Placeholder, corrected: dict[tuple, tuple[float, int]]) -> str:
        if p.kind == "paired":
            return self.paired(p, corrected)
        return getattr(self, p.kind)(p, *p.args)

    def cell(self, task: str, method: str) -> pd.DataFrame:
        found = self.ours[(self.ours.task == task) & (self.ours.method == method) & (self.ours.status == "ok")
                          & self.ours.score.notna()]
        if found.empty:
            raise Missing(f"no records of {method} on {task}")
        return found.sort_values("seed")

    def score(self, p: Placeholder, task: str, method: str) -> str:
        cell = self.cell(task, method)
        display, suite = cell.display.iloc[0], cell.suite.iloc[0]
        table = next(t for t in self.tables if t.suite == suite)  # the leaderboard's table of the task's suite
        return cell_text(summarize(self.everything[self.everything.suite == suite], table.reference)[task, display])

    def seeds(self, p: Placeholder, task: str, method: str) -> str:
        cell = self.cell(task, method)
        return (f"{', '.join(f'{100 * s:.2f}' for s in cell.score)} "
                f"(seed{'s' if len(cell) > 1 else ''} {', '.join(str(int(s)) for s in cell.seed)})")

    def _pairs(self, tasks: str, a: str, b: str) -> pd.DataFrame:
        """A's seeds paired with B's within each task of the comma list (as the leaderboard pairs them), pooled."""
        pooled = []
        for task in tasks.split(","):
            mine, theirs = self.cell(task, a), self.cell(task, b)
            found = seed_pairs(pd.concat([mine, theirs]), theirs.name.iloc[0])
            found = found[found.display == mine.display.iloc[0]]
            if found.empty:
                raise Missing(f"no seeds of {a} and {b} on {task} pair: seeds pair only where both trained with "
                              "the same epochs, batch size and task version")
            pooled.append(found)
        return pd.concat(pooled)

    def paired_p(self, tasks: str, a: str, b: str) -> float:
        try:
            return float(compared(self._pairs(tasks, a, b))["p"])
        except Missing:
            return math.nan

    def paired(self, p: Placeholder, corrected: dict[tuple, tuple[float, int]]) -> str:
        tasks, a, b = p.args
        row = compared(self._pairs(tasks, a, b))
        bounds = "" if math.isnan(row["low"]) else f" [{100 * row['low']:+.2f}, {100 * row['high']:+.2f}]"
        many = len(tasks.split(","))
        n = row["n"]
        pairs = f"{plural(n, 'pair')} over {many} tasks" if many > 1 else plural(n, "paired seed")
        if math.isnan(row["p"]):
            return f"{100 * row['mean']:+.2f}{bounds} points ({pairs}; no p with fewer than 2)"
        if "family" not in p.options:
            return f"{100 * row['mean']:+.2f}{bounds} points ({pairs}; uncorrected p = {row['p']:.2g})"
        family = p.options["family"]
        adjusted, tested = corrected[(family, *p.args)]
        return (f"{100 * row['mean']:+.2f}{bounds} points ({pairs}; p = {adjusted:.2g}, Holm over {tested} "
                f"comparison{'s' if tested > 1 else ''} of family {family})")

    def history(self, p: Placeholder, task: str, method: str, key: str) -> str:
        path = history_path(self.root, task, method)
        if not path.exists():
            raise Missing(f"no history of {method} on {task}")
        curves = read_history(path)["seeds"]
        epochs = min(len(curve) for curve in curves.values()) if curves else 0
        epoch = int(p.options.get("epoch", epochs))
        if not 1 <= epoch <= epochs:
            raise p.error(f"epoch {epoch} is not in {path} (every seed has epochs 1 to {epochs})",
                          f"give epoch=N with N from 1 to {epochs}")
        values = [curve[epoch - 1].get(key) for _, curve in sorted(curves.items(), key=lambda kv: int(kv[0]))]
        values = [v for v in values if v is not None]
        if not values:
            known = sorted({k for curve in curves.values() for k in curve[epoch - 1]})
            raise p.error(f"no seed of {path} has {key!r} at epoch {epoch}", f"use one of {', '.join(known)}")
        return spread(values, int(p.options.get("digits", 2)))

    def ok_records(self) -> list[Record]:
        if self._records is None:
            self._records = [r for r in read_records(self.root) if r.status == "ok"]
        return self._records

    def records(self, tasks: list[str], method: str) -> list[Record]:
        found = [r for r in self.ok_records() if r.task["name"] in tasks and r.method["name"] == method]
        for task in tasks:
            if not any(r.task["name"] == task for r in found):
                raise Missing(f"no records of {method} on {task}")
        return sorted(found, key=lambda r: (tasks.index(r.task["name"]), r.seed))

    def _checked(self, p: Placeholder, found: list[Record], name: str) -> None:
        if not any(name in r.checks for r in found):
            known = sorted({c for r in found for c in r.checks}) or ["(none: these records carry no checks)"]
            raise p.error(f"no record of {p.args[1]} on {p.args[0]} has the check {name!r}",
                          f"use one of {', '.join(known)}")

    def check(self, p: Placeholder, tasks: str, method: str, name: str) -> str:
        found = self.records(tasks.split(","), method)
        self._checked(p, found, name)
        unit = "seeds" if "," not in tasks else "records"
        parts = []
        for state, word in STATES:
            these = [r for r in found if (check_state(r.checks[name]) if name in r.checks else None) == state]
            if not these:
                continue
            encoders = len({encoder_of(r, self.facts) for r in these})
            causes = Counter(m.group(1).strip() for r in these
                             for m in [CAUSE.search(r.checks.get(name, {}).get("detail", ""))] if m)
            said = "".join(f"; cause: {cause} on {n}" for cause, n in sorted(causes.items()))
            parts.append(f"{word} on {len(these)} of {len(found)} {unit} "
                         f"({encoders} distinct encoder{'s' if encoders > 1 else ''}{said})")
        return ", ".join(parts)

    def checkvalue(self, p: Placeholder, task: str, method: str, name: str) -> str:
        found = self.records([task], method)
        self._checked(p, found, name)
        values = [r.checks[name]["value"] for r in found if r.checks.get(name, {}).get("value") is not None]
        if not values:
            raise Missing(f"no record of {method} on {task} has a value for the check {name}")
        return spread(values, int(p.options.get("digits", 2)))

    def curve(self, p: Placeholder, tasks: str, methods: str, param: str) -> str:
        figure, absent = curve_figure(p, self.cell, self.ok_records())
        if figure is None:
            raise Missing(f"no records of {methods} on {tasks}")
        self.absent = absent
        if figure.path not in {f.path for f in self.figures}:  # the same curve twice is one figure
            self.figures.append(figure)
        return f"![{figure.data['score']} against {figure.data['param']}]({figure.path})\n\n*{figure.caption}*"

    def encoders(self, p: Placeholder, task: str, method: str) -> str:
        mine = set(self.cell(task, method).encoder)
        others = self.ours[(self.ours.status == "ok") & ~((self.ours.task == task) & (self.ours.method == method))]
        said = []
        for (other_task, other_method), cell in others.groupby(["task", "method"], sort=True):
            common = mine & set(cell.encoder)
            if common:
                held = f"the same {len(common)}" if common == set(cell.encoder) == mine else f"{len(common)} of them"
                said.append(f"{held} on {other_task}/{other_method}")
        seeds = len(self.cell(task, method))
        return (f"{plural(len(mine), 'distinct encoder')} over {plural(seeds, 'seed')}; "
                + ("; ".join(said) if said else "no other cell holds any of them"))


def spread(values: list[float], digits: int) -> str:
    """`mean (min–max, n seeds)`; one value is shown alone with its count."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (1 seed)"
    low, high = min(values), max(values)
    return f"{sum(values) / len(values):.{digits}f} ({low:.{digits}f}–{high:.{digits}f}, {len(values)} seeds)"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
