"""Hyperparameter search spaces and domains, declared without reference to any tuner.

Methods declare what may vary; the tuning module maps these onto Optuna.
Each parameter also parses a `--set key=value` override from text.

A search-space entry is the range the tuner explores; a domain is every value
the method can run with at all (a learning rate > 0, a size >= 1). A fixed
value outside the tuned range is legitimate; one outside the domain is not, so
every key a method tunes or defaults carries a domain (declared; since 0.2.0
inferred, with a deprecation warning, where a method declares none), and
`check_domains` refuses an out-of-domain value before any work starts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from harness.api.errors import HarnessError


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False

    def parse(self, text: str) -> float:
        return float(text)


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    log: bool = False

    def parse(self, text: str) -> int:
        return int(text)


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]

    def parse(self, text: str) -> Any:
        for option in self.options:
            if str(option) == text:
                return option
        # A value outside the tuned options is still a legitimate fixed setting.
        for convert in (int, float):
            try:
                return convert(text)
            except ValueError:
                pass
        return {"true": True, "false": False}.get(text.lower(), text)


Param = Float | Int | Choice


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """Split `key=value` strings; the values stay text until a search space types them."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise HarnessError(f"malformed --set '{pair}'; write it as key=value, for example --set lr=0.001")
        overrides[key.strip()] = value.strip()
    return overrides


def typed_overrides(overrides: dict[str, str], space: dict[str, Param], defaults: dict[str, Any]) -> dict[str, Any]:
    """Type each override by its parameter; an unknown key is an error that lists the known ones."""
    typed: dict[str, Any] = {}
    known = sorted(set(space) | set(defaults))
    for key, text in overrides.items():
        if key in space:
            param = space[key]
        elif key in defaults:
            param = Choice((defaults[key],))
        else:
            raise HarnessError(f"--set {key}: no such hyperparameter; known ones are {', '.join(known)}")
        try:
            value = param.parse(text)
        except ValueError:
            raise HarnessError(f"--set {key}={text}: not a valid {type(param).__name__.lower()} value") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise HarnessError(f"--set {key}={text}: the value must be finite")
        typed[key] = value
    return typed


@dataclass(frozen=True)
class Interval:
    """Numbers between `low` and `high` (None: unbounded); an open end excludes its bound."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    optional: bool = False  # None is allowed too: the method then picks its own value

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.integer and value != int(value):
            return False
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (below or above)

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            text = f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        elif self.high is not None:
            text = f"{kind} {'<' if self.high_open else '<='} {self.high:g}"
        else:
            text = f"any finite {kind[2:]}"
        return text + (", or None" if self.optional else "")


@dataclass(frozen=True)
class OneOf:
    """One of `options`, or text that starts with one of `prefixes` and goes on (a path, a module)."""

    options: tuple[Any, ...] = ()
    prefixes: tuple[str, ...] = ()

    def contains(self, value: Any) -> bool:
        if any(value == option and type(value) is type(option) for option in self.options):
            return True
        return isinstance(value, str) and any(value.startswith(p) and len(value) > len(p) for p in self.prefixes)

    def describe(self) -> str:
        if self.prefixes == ("",) and not self.options:
            return "any non-empty text"
        return "one of " + ", ".join([str(o) for o in self.options] + [f"{p}..." for p in self.prefixes])


Domain = Interval | OneOf


def to_entry(declared: Param | Domain) -> dict[str, Any]:
    """A search-space entry or a domain as plain data (the metadata index stores them so)."""
    return {"type": type(declared).__name__, **asdict(declared)}


def from_entry(entry: Mapping[str, Any]) -> Param | Domain:
    """The inverse of `to_entry` (JSON's lists back to the tuples the classes hold)."""
    kinds = {cls.__name__: cls for cls in (Float, Int, Choice, Interval, OneOf)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k != "type"}
    return kinds[entry["type"]](**fields)


# The domains most hyperparameters fall into.
POSITIVE = Interval(low=0, low_open=True)  # learning rates, temperatures, scales
NON_NEGATIVE = Interval(low=0)  # weight decay
SIZE = Interval(low=1, integer=True)  # widths, depths, epochs


def infer_domain(default: Any, param: Param | None) -> Domain:
    """The domain of a key its method declared none for (methods written before 0.2.0 had no `domains`):
    a number's from the smallest value the method itself gives it (its default and, for a tuned key, the
    range's low end or options), so that no value the method already runs with is refused: all > 0 is
    POSITIVE (SIZE for whole numbers >= 1), all >= 0 NON_NEGATIVE, else any finite number; a bool's is
    True or False; anything else (text, a choice of text) is its default or the tuned options, or any text."""
    if isinstance(param, Choice):
        given = [*param.options, default]
    elif param is not None:
        given = [param.low, param.high, default]
    else:
        given = [default]
    known = [v for v in given if v is not None]
    optional = default is None
    if known and all(isinstance(v, bool) for v in known):
        return OneOf((True, False, *((None,) if optional else ())))
    if known and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in known):
        integer = isinstance(param, Int) or (param is None and isinstance(default, int)) or (
            isinstance(param, Choice) and all(isinstance(v, int) for v in known))
        low = min(known)
        if low >= 1 and integer:
            return Interval(low=1, integer=True, optional=optional)
        if low > 0:
            return Interval(low=0, low_open=True, integer=integer, optional=optional)
        if low >= 0:
            return Interval(low=0, integer=integer, optional=optional)
        return Interval(integer=integer, optional=optional)
    # Text: the options the method names, or any non-empty text where it names none to choose from.
    return OneOf(tuple(known) + ((None,) if optional else ())) if isinstance(param, Choice) else OneOf(
        (None,) if optional else (), prefixes=("",))


_warned: set[tuple[str, str]] = set()  # (owner, key): warned once per process, not once per pair or trial


def with_inferred_domains(owner: str, space: Mapping[str, Param], defaults: Mapping[str, Any],
                          domains: Mapping[str, Domain]) -> dict[str, Domain]:
    """`domains`, plus an inferred one (`infer_domain`) for each key of `space` and `defaults` that lacks
    one, with a one-line deprecation warning per key on the harness's log (what a CLI user sees)."""
    found = dict(domains)
    for key in sorted((set(space) | set(defaults)) - set(domains)):
        found[key] = infer_domain(defaults.get(key), space.get(key))
        if (owner, key) not in _warned:
            _warned.add((owner, key))
            logging.getLogger("harness").warning(
                "deprecated: %s declares no domain for hyperparameter '%s'; using %s, inferred from its "
                "default and range (declare it in `domains`)", owner, key, found[key].describe())
    return found


def check_domains(owner: str, space: Mapping[str, Param], defaults: Mapping[str, Any],
                  overrides: Mapping[str, Any], domains: Mapping[str, Domain]) -> None:
    """Refuse, in one line, a default, --set value or tuned range outside its domain; a key without a
    declared domain gets an inferred one, with a deprecation warning (`with_inferred_domains`).

    A --set value's error names the fix on the command line; a default's or a search space's names the
    method, whose declaration is the defect.
    """
    domains = with_inferred_domains(owner, space, defaults, domains)
    for key, value in overrides.items():
        if not domains[key].contains(value):
            raise HarnessError(f"--set {key}={value}: {key} must be {domains[key].describe()}; "
                               f"pass one, for example --set {key}={_example(key, space, defaults, domains[key])}")
    for key, value in defaults.items():
        if not domains[key].contains(value):
            raise HarnessError(f"{owner}: default {key}={value!r} is outside its domain "
                               f"({domains[key].describe()}); fix the method's defaults")
    for key, param in space.items():
        ends = param.options if isinstance(param, Choice) else (param.low, param.high)
        if not all(domains[key].contains(end) for end in ends):
            raise HarnessError(f"{owner}: the search space {key}={param} leaves its domain "
                               f"({domains[key].describe()}); fix the method's search_space")


def _example(key: str, space: Mapping[str, Param], defaults: Mapping[str, Any], domain: Domain) -> Any:
    """A value inside the domain to show in the error: the default, else the tuned range's start."""
    if key in defaults and defaults[key] is not None:
        return defaults[key]
    param = space.get(key)
    if param is not None:
        return param.options[0] if isinstance(param, Choice) else param.low
    if isinstance(domain, OneOf):
        return domain.options[0] if domain.options else f"{domain.prefixes[0]}..."
    return (domain.low or 0) + 1
