"""Hyperparameter search spaces, declared without reference to any tuner.

Methods declare what may vary; the tuning module maps these onto Optuna.
Each parameter also parses a `--set key=value` override from text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError


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
