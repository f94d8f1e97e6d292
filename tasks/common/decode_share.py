"""How many rows of each batch the decode workers hand to the GPU as JPEG bytes (tasks.common.jpeg).

The workers decode on the CPU; where they cannot keep up, the GPU decodes a share of each batch
(nvjpeg) besides training. Too small a share leaves the GPU waiting for the workers; too large a
share takes GPU time from training while the workers idle. The controller watches the workers'
utilisation, their decoding seconds over the wall seconds that the batches took to arrive, and
steers it into a band: above it the workers are the bottleneck (more rows to the GPU), below it they
wait for the training process (fewer). It is a pure function of what it is told: deterministic.
"""

from __future__ import annotations

START = 0.2  # issue 24: the GPU had headroom for about a fifth of the images at the step's rate
STEP = 0.05
LOWEST, HIGHEST = 0.0, 0.5  # at half, nvjpeg already decodes at the step's pace (docs/imagenet.md)
EVERY = 8  # batches per decision
BAND = (0.75, 0.9)  # the workers' utilisation aimed at


class ShareController:
    """The share of each batch's rows passed as bytes, adjusted by STEP every EVERY batches.

    Only batches decoded at the current share count towards a decision: the workers run several
    batches ahead of the training process, and a decision taken on batches decoded at the share
    before would see the old share's effect and overshoot. The share is kept as a whole number of
    steps, so it never drifts off the grid (0.2 + 0.05 stays 0.25)."""

    def __init__(self, workers: int, start: float = START):
        self.workers = max(1, workers)
        self._steps = round(start / STEP)
        self._busy = 0.0
        self._wall = 0.0
        self._seen = 0
        self.decisions: list[tuple[float, float]] = []  # (utilisation, share after), for the benchmark's report

    @property
    def share(self) -> float:
        return round(self._steps * STEP, 10)

    def observe(self, share: float, busy_s: float, wall_s: float) -> float:
        """One batch arrived: decoded at `share`, in `busy_s` of one worker's time, `wall_s` after the
        batch before it. Returns the share for the batches to come."""
        if abs(share - self.share) > 1e-9:
            return self.share
        self._busy += busy_s
        self._wall += wall_s
        self._seen += 1
        if self._seen < EVERY:
            return self.share
        utilisation = self._busy / (self.workers * self._wall) if self._wall > 0 else 1.0
        if utilisation > BAND[1]:
            self._steps += 1
        elif utilisation < BAND[0]:
            self._steps -= 1
        self._steps = min(max(self._steps, round(LOWEST / STEP)), round(HIGHEST / STEP))
        self.decisions.append((round(utilisation, 3), self.share))
        self._busy = self._wall = 0.0
        self._seen = 0
        return self.share
