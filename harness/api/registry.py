"""One generic registry of lazily imported entries.

Entries are "module:attribute" strings, so listing names imports nothing heavy.
Built-in entries come from a table in the project; third-party packages add
theirs through an entry-point group without editing this repository.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from harness.api.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, builtins: dict[str, str], entry_point_group: str):
        self.kind = kind
        self._targets: dict[str, str] = dict(builtins)
        self._group = entry_point_group
        self._plugins_loaded = False
        self._loaded: dict[str, type[T]] = {}

    def register(self, name: str, target: str) -> None:
        """Add an entry by its "module:attribute" path; the module is imported on first use.

        Registering a name again with the same target is harmless; with another target it is refused,
        so neither a plugin nor a test ever silently replaces or loses an entry.
        """
        known = self._targets.get(name)
        if known is not None and known != target:
            raise HarnessError(f"{self.kind} '{name}' is registered twice, to {known} and to {target}; "
                               f"rename one of them")
        self._targets[name] = target

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        for ep in entry_points(group=self._group):
            self.register(ep.name, ep.value)
        self._plugins_loaded = True  # only once all were accepted: a clash is reported on every use

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._targets)

    def targets(self) -> dict[str, str]:
        """Every entry's "module:attribute", plugins included; nothing is imported."""
        self._load_plugins()
        return dict(self._targets)

    def target(self, name: str) -> str:
        return self.targets()[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def require(self, name: str) -> None:
        """Fail for an unknown name with a "did you mean" line, importing no entry (so no torch either)."""
        if name not in self:
            raise HarnessError(self._unknown_message(name))

    def get(self, name: str) -> type[T]:
        self.require(name)
        if name not in self._loaded:
            module_name, _, attribute = self._targets[name].partition(":")
            entry = getattr(importlib.import_module(module_name), attribute)
            if getattr(entry, "name", name) != name:
                raise HarnessError(
                    f"{self.kind} '{name}' is registered to {self._targets[name]}, whose name is "
                    f"'{entry.name}'; make the registry key and the class's name agree"
                )
            self._loaded[name] = entry
        return self._loaded[name]

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"run `harness list {self.kind}s` to see them"
        return f"unknown {self.kind} '{name}'; {hint}"
