"""Per-step scalars averaged over windows of steps, kept on the device during training.

An epoch mean can average a collapse inside the epoch away; a method that must
check something step by step records it here and reads the windows once, after
training. Nothing is read back to the host while recording: on a GPU each such
read would stall the queue of kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    first_step: int  # 1-based, counted over the whole run
    last_step: int
    means: dict[str, float]

    def where(self, steps_per_epoch: int | None) -> str:
        """'steps 21-40 (epoch 1)', or without the epoch when the run's epoch length is unknown."""
        steps = f"steps {self.first_step}-{self.last_step}"
        if not steps_per_epoch:
            return steps
        first, last = (-(-s // steps_per_epoch) for s in (self.first_step, self.last_step))
        return f"{steps} (epoch {first})" if first == last else f"{steps} (epochs {first}-{last})"


class StepWindows:
    """Each recorded key averaged over consecutive windows of `size` steps."""

    def __init__(self, size: int = 20):
        if size < 1:
            raise ValueError(f"a window needs at least one step, got {size}")
        self.size = size
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self._pending: dict[str, list[torch.Tensor]] = {}
        self._closed: list[dict[str, torch.Tensor]] = []

    def add(self, values: dict[str, torch.Tensor]) -> None:
        """One step's values (0-d tensors, any device); every step must record the same keys."""
        for key, value in values.items():
            self._pending.setdefault(key, []).append(torch.as_tensor(value).detach().float())
        self.steps += 1
        if self.steps % self.size == 0:
            self._closed.append({k: torch.stack(v).sum() for k, v in self._pending.items()})
            self._pending = {}

    def windows(self) -> list[Window]:
        """The windows' means. A last, partial window joins the one before it (a handful of steps would be
        judged on its noise alone); a run shorter than one window is one window."""
        sums = [dict(w) for w in self._closed]
        counts = [self.size] * len(sums)
        if self._pending:
            partial = {k: torch.stack(v).sum() for k, v in self._pending.items()}
            if sums:
                sums[-1] = {k: sums[-1][k] + partial[k] for k in partial}
                counts[-1] += len(next(iter(self._pending.values())))
            else:
                sums, counts = [partial], [self.steps]
        out, first = [], 1
        for total, count in zip(sums, counts):
            out.append(Window(first, first + count - 1, {k: float(v) / count for k, v in total.items()}))
            first += count
        return out
