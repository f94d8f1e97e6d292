"""What a method checked about the assumptions its number rests on: held, violated, or not measurable.

Torch-free, so the leaderboard reads a record's checks without loading a model library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AssumptionCheck:
    """Whether an assumption a method's number rests on held in one run.

    An upper bound that must stay a bound, a guide that must beat chance: the
    method says what it checked, the harness records it beside the result, and
    a tuning trial whose check failed counts as failed (never selected).

    A check whose estimator could not have failed in this run (an estimate
    pinned near zero whatever the truth) is not measurable: `measurable=False`,
    `held=False`, and the detail says why. It never reads "held", and it does
    not fail a trial either: it says nothing about the number, in either direction.
    """

    name: str
    held: bool
    detail: str  # one line a reader understands, with the measured figure
    value: float | None = None
    measurable: bool = True

    def __post_init__(self) -> None:
        if not self.measurable and self.held:
            raise ValueError(f"check {self.name}: a check that could not fail cannot have held")

    @property
    def failed(self) -> bool:
        return self.measurable and not self.held

    @property
    def state(self) -> str:
        return check_state(self.as_record())

    def as_record(self) -> dict[str, Any]:
        return {"held": self.held, "measurable": self.measurable, "detail": self.detail, "value": self.value}


def check_state(record: dict[str, Any]) -> str:
    """The state of a record's check: held, violated or not measurable (older records are all measurable)."""
    if not record.get("measurable", True):
        return "not measurable"
    return "held" if record["held"] else "violated"
