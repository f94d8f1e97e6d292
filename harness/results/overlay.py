"""Reading a records folder together with others, read-only: `harness leaderboard --results runs --with results`.

The first folder is the one the outputs go to; the others (`--with`) are only
read, and their rows are "published": a cell of the first folder is compared
with them (harness.results.protocol_marks). While folders are overlaid every
row is named with its folder, "SimCLR [runs]" beside "SimCLR [results]", so
rows from two folders never share a cell, a rank or a paired difference.
Imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.api.errors import HarnessError

REFERENCE_DIR = "reference"
SOURCES_FILE = "sources.toml"


@dataclass(frozen=True)
class Folder:
    path: Path
    label: str  # how rows and the header name it: its name, or its path where two names coincide
    published: bool  # an overlaid (--with) folder: read only, the rows others are compared with


@dataclass(frozen=True)
class Folders:
    """Where the records are read from and the outputs written (the first); the overlaid folders after it."""

    all: tuple[Folder, ...]

    @property
    def root(self) -> Folder:
        return self.all[0]

    @property
    def overlaid(self) -> bool:
        return len(self.all) > 1

    def reference(self) -> Path:
        """The papers' numbers and the suites' settings: the first folder's, else the first overlaid folder's
        that has them (a user's runs/ has none; overlaid on results/, its tables get the published ones)."""
        for folder in self.all:
            if (folder.path / REFERENCE_DIR / SOURCES_FILE).exists():
                return folder.path / REFERENCE_DIR
        return self.root.path / REFERENCE_DIR

    def reference_label(self) -> str:
        found = self.reference().parent
        return next(f.label for f in self.all if f.path == found)

    def row_name(self, name: str, label: str) -> str:
        return f"{name} [{label}]" if self.overlaid else name

    def describe(self) -> str:
        """Where the tables come from, in markdown, for the outputs' header."""
        text = f"the records in `{self.root.label}/records/`"
        if self.overlaid:
            others = ", ".join(f"`{f.label}/records/`" for f in self.all[1:])
            text += (f" beside those in {others} (read only; each row is named with its folder: "
                     f"`METHOD [{self.root.label}]`)")
        return text


def folders(root: Path, overlays: list[Path] | tuple[Path, ...] = ()) -> Folders:
    """The folders, checked: an overlaid one must exist, hold records, and be neither the first nor given twice."""
    paths = [Path(root)] + [Path(p) for p in overlays]
    for path in paths[1:]:
        if not path.is_dir():
            raise HarnessError(f"--with {path}: no such folder; give a results folder that holds records/ "
                               "(the published ones: --with results)")
        if not (path / "records").is_dir():
            raise HarnessError(f"--with {path}: no records/ folder in it; give a results folder such as results")
    seen: dict[Path, Path] = {}
    for path in paths:
        resolved = path.resolve()
        if resolved in seen:
            raise HarnessError(f"--with {path}: the same folder as {seen[resolved]}; give each folder once, and "
                               "not the --results folder")
        seen[resolved] = path
    names = [p.resolve().name or str(p) for p in paths]
    labels = [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]
    return Folders(tuple(Folder(p, label, i > 0) for i, (p, label) in enumerate(zip(paths, labels))))


def counterpart(results: pd.DataFrame, name: str, task: str, source: str) -> pd.DataFrame:
    """The scored seeds of the row called `name` (a baseline, a control, a reference) that a row of `source`
    on `task` is compared with: its own folder's where that folder has it on the task, else the first
    overlaid folder's that has it (a user who ran only their method still pairs with the published baseline)."""
    found = results[(results.name == name) & (results.task == task) & (results.status == "ok")
                    & results.score.notna()]
    own = found[found.source == source]
    if len(own) or found.empty:
        return own
    first = found.order.min()
    return found[found.order == first]
