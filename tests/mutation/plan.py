"""What to mutate: the TOMLs in tests/mutation/, each read and checked in full before anything runs."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.api.errors import HarnessError

ROOT = Path(__file__).resolve().parents[2]
PLANS = Path("tests") / "mutation"  # under the repository root


@dataclass(frozen=True)
class Module:
    path: str  # the mutated file, relative to the repository root: "methods/common/losses.py"
    tests: tuple[str, ...]  # the test files its mutants run against
    equivalent: dict[str, str]  # mutant name -> why it computes what the original computes

    @property
    def dotted(self) -> str:
        """The module's dotted name, which begins each of its mutants' names and names its TOML."""
        return dotted_name(self.path)


def dotted_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def read_plan(toml: Path, root: Path) -> Module:
    """One TOML, checked: its module and tests exist, its name is the module's, each equivalent has a reason."""
    where = toml.relative_to(root) if toml.is_relative_to(root) else toml
    try:
        data = tomllib.loads(toml.read_text())
    except tomllib.TOMLDecodeError as error:
        raise HarnessError(f"{where} is not valid TOML ({error}); fix the file") from None
    unknown = set(data) - {"module", "tests", "equivalent"}
    if unknown:
        raise HarnessError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                           "a plan holds only module, tests and [[equivalent]]")
    path = data.get("module")
    if not isinstance(path, str) or not path.endswith(".py"):
        raise HarnessError(f'{where}: module must be the path of the file to mutate, '
                           'e.g. module = "methods/common/losses.py"')
    if toml.stem != dotted_name(path):
        raise HarnessError(f"{where} names module {path}; rename the file {dotted_name(path)}.toml")
    if not (root / path).is_file():
        raise HarnessError(f"{where}: module {path} does not exist; fix its path")
    tests = data.get("tests")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise HarnessError(f'{where}: tests must be a non-empty list of test files, e.g. tests = ["tests/test_x.py"]')
    missing = [t for t in tests if not (root / t).is_file()]
    if missing:
        raise HarnessError(f"{where}: test file(s) {', '.join(missing)} do not exist; fix the tests list")
    return Module(path, tuple(tests), read_equivalents(data.get("equivalent", []), dotted_name(path), where))


def read_equivalents(entries, dotted: str, where: Path) -> dict[str, str]:
    if not isinstance(entries, list):
        raise HarnessError(f"{where}: equivalent must be a list of [[equivalent]] tables")
    equivalent: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"mutant", "reason"}:
            raise HarnessError(f"{where}: each [[equivalent]] holds exactly mutant and reason")
        mutant, reason = entry["mutant"], entry["reason"]
        if not isinstance(mutant, str) or not mutant.startswith(dotted + "."):
            raise HarnessError(f"{where}: equivalent mutant {mutant!r} is not one of {dotted}'s "
                               f"(mutmut names them {dotted}.x_FUNCTION__mutmut_N)")
        if not isinstance(reason, str) or not reason.strip():
            raise HarnessError(f"{where}: equivalent mutant {mutant} needs a reason (why it computes the same)")
        if mutant in equivalent:
            raise HarnessError(f"{where}: equivalent mutant {mutant} is listed twice; keep one entry")
        equivalent[mutant] = reason
    return equivalent


def select(names: list[str], root: Path = ROOT) -> list[Module]:
    """The plans for `names` (dotted names or paths of modules), or every plan when none is named."""
    folder = root / PLANS
    available = sorted(folder.glob("*.toml"))
    if not names:
        if not available:
            raise HarnessError(f"no mutation plans in {PLANS}; add one TOML per module (docs/mutation.md)")
        return [read_plan(toml, root) for toml in available]
    plans = []
    for name in names:
        dotted = dotted_name(Path(name).as_posix()) if name.endswith(".py") else name
        toml = folder / f"{dotted}.toml"
        if not toml.is_file():
            known = ", ".join(t.stem for t in available) or "none"
            raise HarnessError(f"no mutation plan for {name} ({PLANS / toml.name} does not exist); "
                               f"the modules with one: {known}")
        plans.append(read_plan(toml, root))
    return plans
