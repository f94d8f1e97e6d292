"""Analysis pages whose figures come from the records: `pages/NAME.md` templates rendered to `NAME.md`.

A records folder may hold `pages/*.md`, prose written by hand; `harness leaderboard` renders each to `NAME.md`
beside LEADERBOARD.md (and `--check` reports it stale like any other output), so no figure in the prose is typed.
A placeholder is `{{kind ARG ... option=value}}` on one line; markdown never uses `{{`, so any `{{` opens one.
The kinds (TASK and METHOD are the names in the records, e.g. `synthetic factorcl-ssl`):

- `{{score TASK METHOD}}`: the task's main score as its leaderboard cell shows it, mean ± 95% t half-width (seeds),
  percent, with the cell's marks.
- `{{seeds TASK METHOD}}`: the main score of each seed, percent, in seed order: `96.48, 96.18 (seeds 0, 1)`.
- `{{paired TASK A B family=NAME}}`: A's main score minus B's over the seeds both have (with the same epochs and
  batch size on the same task version, as the leaderboard pairs them), in points: mean [95% t interval] (paired
  seeds) and the paired t-test's two-sided p, Holm-corrected over every `paired` placeholder of family NAME in
  the page (the same comparison written twice counts once); without family= the p is uncorrected and says so; one
  paired seed gives no p.
- `{{history TASK METHOD KEY epoch=N digits=D}}`: the per-epoch value KEY of `history/TASK/METHOD.json` at epoch N
  (1 is the first; default the last every seed has), mean over seeds (min–max, seeds), D decimals (default 2).
- `{{check TASKS METHOD CHECK}}`: how the records' check CHECK came out, per state (failed, not measurable, held,
  not recorded), counting seeds and distinct trained encoders (records that share one count once; TASKS may be a
  comma list, e.g. tasks that share inputs), and the causes the details name as `cause: ...;`.
- `{{checkvalue TASK METHOD CHECK digits=D}}`: the check's recorded value, mean over seeds (min–max, seeds).
- `{{encoders TASK METHOD}}`: the cell's distinct trained encoders and the other cells (task/method) holding them.

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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.api.checks import check_state
from harness.api.errors import HarnessError
from harness.results import stats
from harness.results.encoders import EncoderFacts, encoder_of
from harness.results.leaderboard import Table, cell_text, summarize
from harness.results.paired import paired_differences
from harness.results.publishing.history import history_path, read_history
from harness.results.records import Record, read_records

PAGES_DIR = "pages"
GENERATED = "_Generated from "  # how a generated page's first line opens: what tells it from a hand-written file
PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
CAUSE = re.compile(r"cause: ([^;]+)")
# kind -> (positional arguments, options it takes)
KINDS = {"score": (("TASK", "METHOD"), ()), "seeds": (("TASK", "METHOD"), ()),
         "paired": (("TASK", "A", "B"), ("family",)), "history": (("TASK", "METHOD", "KEY"), ("epoch", "digits")),
         "check": (("TASKS", "METHOD", "CHECK"), ()), "checkvalue": (("TASK", "METHOD", "CHECK"), ("digits",)),
         "encoders": (("TASK", "METHOD"), ())}
STATES = (("violated", "failed"), ("not measurable", "not measurable"), ("held", "held"), (None, "not recorded"))


@dataclass(frozen=True)
class Placeholder:
    page: str
    line: int
    text: str  # as written, braces included
    kind: str
    args: tuple[str, ...]
    options: dict[str, str]

    def error(self, problem: str, fix: str) -> HarnessError:
        return HarnessError(f"{self.page}:{self.line}: {self.text}: {problem}; {fix}")


class Missing(Exception):
    """The records a placeholder reads do not exist: the page says so and the command warns."""


def render_pages(root: Path, results: pd.DataFrame, tables: list[Table], facts: EncoderFacts,
                 reserved: set[str]) -> tuple[dict[str, str], list[str]]:
    """{output file name: text} for every template in root/pages/, and one warning per placeholder whose
    records are missing. `results` and `tables` are the leaderboard's (harness.results.leaderboard.build)."""
    templates = sorted((Path(root) / PAGES_DIR).glob("*.md"))
    if not templates:
        return {}, []
    reader = Reader(Path(root), results[results.order == 0], results, tables, facts)
    outputs, warnings = {}, []
    for template in templates:
        if template.name in reserved:
            raise HarnessError(f"{template}: its page would overwrite {template.name}, which `harness leaderboard` "
                               "writes itself; rename the template")
        text, missing = render_page(f"{PAGES_DIR}/{template.name}", template.read_text(), reader)
        outputs[template.name] = text
        warnings += missing
    return outputs, warnings


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

    def _differences(self, task: str, a: str, b: str) -> pd.DataFrame:
        mine, theirs = self.cell(task, a), self.cell(task, b)
        found = paired_differences(pd.concat([mine, theirs]), theirs.name.iloc[0])
        return found[found.method == mine.display.iloc[0]]

    def paired_p(self, task: str, a: str, b: str) -> float:
        try:
            found = self._differences(task, a, b)
        except Missing:
            return math.nan
        return float(found.p.iloc[0]) if len(found) else math.nan

    def paired(self, p: Placeholder, corrected: dict[tuple, tuple[float, int]]) -> str:
        task, a, b = p.args
        found = self._differences(task, a, b)
        if found.empty:
            raise Missing(f"no seeds of {a} and {b} on {task} pair: seeds pair only where both trained with the "
                          "same epochs, batch size and task version")
        row = found.iloc[0]
        bounds = "" if math.isnan(row.low) else f" [{100 * row.low:+.2f}, {100 * row.high:+.2f}]"
        seeds = f"{row.n} paired seed{'s' if row.n > 1 else ''}"
        if math.isnan(row.p):
            return f"{100 * row['mean']:+.2f}{bounds} points ({seeds}; no p with fewer than 2)"
        if "family" not in p.options:
            return f"{100 * row['mean']:+.2f}{bounds} points ({seeds}; uncorrected p = {row.p:.2g})"
        family = p.options["family"]
        adjusted, tested = corrected[(family, *p.args)]
        return (f"{100 * row['mean']:+.2f}{bounds} points ({seeds}; p = {adjusted:.2g}, Holm over {tested} "
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

    def records(self, tasks: list[str], method: str) -> list[Record]:
        if self._records is None:
            self._records = [r for r in read_records(self.root) if r.status == "ok"]
        found = [r for r in self._records if r.task["name"] in tasks and r.method["name"] == method]
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
