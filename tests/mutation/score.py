"""A module's mutants sorted by outcome, against its list of equivalent mutants; the table the command prints.

The exit codes are mutmut 3.8.1's (mutmut/stats.py): they are read from its `mutants/<path>.meta` files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tabulate import tabulate

from tests.mutation.plan import Module

KILLED = {1, 3}  # a test failed (3: pytest's internal error, which mutmut counts as a kill)
TIMEOUT = {36, 24, -24, 152, 255}  # the mutant ran past its time limit: counted as killed
SURVIVED = {0, 5, 33}  # every test passed (0), or no test reaches the mutated function (5, 33)


@dataclass
class Score:
    module: str
    mutants: int = 0
    killed: int = 0  # timeouts included
    equivalent: int = 0  # survivors the plan explains
    survivors: list[str] = field(default_factory=list)  # survivors the plan does not explain
    stale: list[str] = field(default_factory=list)  # plan entries that name no surviving mutant
    unsettled: list[str] = field(default_factory=list)  # no verdict: not run, segfault, interrupted, ...

    @property
    def ok(self) -> bool:
        return not (self.survivors or self.stale or self.unsettled)


def score(module: Module, exit_codes: dict[str, int | None]) -> Score:
    """Sort `exit_codes` (mutant name -> mutmut's exit code for it) by outcome against the module's plan."""
    result = Score(module.path, mutants=len(exit_codes))
    for name, code in sorted(exit_codes.items(), key=lambda item: in_order(item[0])):
        if code in KILLED or code in TIMEOUT:
            result.killed += 1
        elif code in SURVIVED:
            if name in module.equivalent:
                result.equivalent += 1
            else:
                result.survivors.append(name)
        else:
            result.unsettled.append(f"{name} (exit code {code})")
    for name in sorted(module.equivalent, key=in_order):
        if name not in exit_codes:
            result.stale.append(f"{name} (no such mutant)")
        elif exit_codes[name] in KILLED or exit_codes[name] in TIMEOUT:
            result.stale.append(f"{name} (killed)")
    return result


def in_order(name: str) -> tuple[str, int]:
    """Function by function, each one's mutants by number: ..._mutmut_2 before ..._mutmut_10."""
    function, _, number = name.rpartition("__mutmut_")
    return (function, int(number)) if number.isdigit() else (name, -1)


def table(scores: list[Score]) -> str:
    """One row per module, then a line per problem: the names to kill with a test or explain in the plan."""
    rows = [[s.module, s.mutants, s.killed, s.equivalent, len(s.survivors), len(s.stale),
             f"{100 * s.killed / s.mutants:.1f}%" if s.mutants else "-"] for s in scores]
    lines = [tabulate(rows, headers=["module", "mutants", "killed", "equivalent", "survivors", "stale", "score"],
                      tablefmt="github")]
    for s in scores:
        for label, names in (("unexplained survivor", s.survivors), ("stale equivalent entry", s.stale),
                             ("no verdict", s.unsettled)):
            lines += [f"{s.module}: {label}: {name}" for name in names]
    return "\n".join(lines)


def exit_code(scores: list[Score]) -> int:
    return 0 if all(s.ok for s in scores) else 1
