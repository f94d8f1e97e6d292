"""One placeholder of an analysis page (harness.results.publishing.pages), and how it says its records are missing:
apart from the pages so that the kinds drawn in their own modules (harness.results.publishing.curves) can use them."""

from __future__ import annotations

from dataclasses import dataclass

from harness.api.errors import HarnessError


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
