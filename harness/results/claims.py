"""Published claims as data: what a paper says, and the test in the records that could refute it. Imports no torch.

A claims file (`claims.toml` in a results folder; a plugin may ship its own through the `harness.claims`
entry-point group, its value "package:path/inside/it.toml") lists `[[claim]]` tables:

    id, paper, where          which claim, and where in the paper it is made
    statement                 the claim in one sentence
    family                    its multiple-comparison family: Holm runs over every comparison of the family
    min_encoders              the fewest distinct trained encoders of each compared row that can decide it
    needs                     what would test it where no record does ("a GPU run of imagenet-100")
    stands_in_for, differs    the paper's task this one stands in for, and how the two differ
    [claim.test]              kind = "paired": `row` minus each of `versus` and `controls`, per seed, on
                              `tasks` (their main score, or `score`), in `direction` "above", "below" or
                              "differs"; with `versus_task`, the compared rows are read on that task;
                              kind = "check": the record checks `checks` of `methods` on `tasks` all hold;
                              kind = "diagnostic": the MI estimate (bits) of `row`'s `part` about the latent
                              `extra` minus `versus`'s `versus_part`, per diagnosed seed

How many distinct encoders a set of records holds is decided by `harness.results.encoders` alone.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from harness.api.errors import HarnessError

CLAIMS_FILE = "claims.toml"
ENTRY_POINT_GROUP = "harness.claims"
KINDS = {"paired": ("tasks", "row"), "check": ("tasks", "methods", "checks"),
         "diagnostic": ("tasks", "row", "versus", "part", "extra", "versus_part")}
DIRECTIONS = ("above", "below", "differs")
REQUIRED = ("id", "paper", "where", "statement", "family", "min_encoders", "test")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    where: str
    statement: str
    family: str
    min_encoders: int
    test: dict[str, Any]
    source: str  # the file it came from, for error messages and the table
    needs: str = ""
    stands_in_for: str = ""
    differs: str = ""

    @property
    def kind(self) -> str:
        return self.test["kind"]

    @property
    def compared(self) -> list[str]:
        """The rows a paired or diagnostic test subtracts from `row`: the claim's own, then its controls."""
        versus = self.test.get("versus", [])
        return ([versus] if isinstance(versus, str) else list(versus)) + list(self.test.get("controls", []))


def load_claims(root: Path) -> list[Claim]:
    """The results folder's claims file, then every plugin's, in entry-point order; [] when there are none."""
    files = [Path(root) / CLAIMS_FILE] + plugin_claim_files()
    claims = [claim for path in files if path.exists() for claim in _read(path)]
    seen: dict[str, str] = {}
    for claim in claims:
        if claim.id in seen:
            raise HarnessError(f"claim '{claim.id}' is declared in {seen[claim.id]} and again in {claim.source}; "
                               "rename one of them")
        seen[claim.id] = claim.source
    return claims


def plugin_claim_files() -> list[Path]:
    """Each `harness.claims` entry point's file, found without importing its package."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        package, _, inside = ep.value.partition(":")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations or not inside:
            raise HarnessError(f"claims entry point '{ep.name}' = '{ep.value}' names no file in an installed "
                               "package; write it as \"package:path/inside/it.toml\"")
        found.append(Path(list(spec.submodule_search_locations)[0]) / inside)
    return found


def _read(path: Path) -> list[Claim]:
    try:
        entries = tomllib.loads(path.read_text()).get("claim", [])
    except (OSError, ValueError) as exc:
        raise HarnessError(f"{path}: the claims cannot be read ({type(exc).__name__}: {exc}); fix the file") from None
    return [_claim(path, entry) for entry in entries]


def _claim(path: Path, entry: dict[str, Any]) -> Claim:
    name = entry.get("id", "(no id)")

    def refuse(problem: str) -> HarnessError:
        return HarnessError(f"{path}: claim '{name}' {problem}; see the claims file format in "
                            "harness/results/claims.py")

    missing = [key for key in REQUIRED if key not in entry]
    if missing:
        raise refuse(f"lacks {', '.join(missing)}")
    unknown = set(entry) - set(REQUIRED) - {"needs", "stands_in_for", "differs"}
    if unknown:
        raise refuse(f"has unknown keys {', '.join(sorted(unknown))}")
    test = entry["test"]
    kind = test.get("kind")
    if kind not in KINDS:
        raise refuse(f"has test kind {kind!r}; use one of {', '.join(KINDS)}")
    lacking = [key for key in KINDS[kind] if not test.get(key)]
    if lacking:
        raise refuse(f"has a {kind} test without {', '.join(lacking)}")
    if not isinstance(test["tasks"], list) or not all(isinstance(t, str) for t in test["tasks"]):
        raise refuse("needs `tasks`, a list of task names")
    if kind == "diagnostic" and len(test["tasks"]) != 1:
        raise refuse("has a diagnostic test on several tasks; a diagnostic reads one task's MI estimates")
    if kind == "paired" and not (test.get("versus") or test.get("controls")):
        raise refuse("has a paired test that compares its row with nothing: give `versus` or `controls`")
    if test.get("direction", "above") not in DIRECTIONS:
        raise refuse(f"has direction {test['direction']!r}; use one of {', '.join(DIRECTIONS)}")
    if not isinstance(entry["min_encoders"], int) or entry["min_encoders"] < 1:
        raise refuse("needs min_encoders, a whole number of at least 1")
    if bool(entry.get("stands_in_for")) != bool(entry.get("differs")):
        raise refuse("gives only one of stands_in_for and differs; a stand-in says how it differs")
    return Claim(entry["id"], entry["paper"], entry["where"], entry["statement"], entry["family"],
                 entry["min_encoders"], test, str(path), entry.get("needs", ""), entry.get("stands_in_for", ""),
                 entry.get("differs", ""))
