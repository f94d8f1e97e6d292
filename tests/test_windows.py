"""StepWindows: per-step scalars averaged over windows of steps, the tail joined to the last full window."""

import torch

from methods.common.windows import StepWindows


def record(windows: StepWindows, values):
    for v in values:
        windows.add({"x": torch.tensor(float(v))})


def test_a_partial_tail_joins_the_last_full_window():
    w = StepWindows(4)
    record(w, [1, 1, 1, 1, 2, 2, 2, 2, 8, 8])
    found = w.windows()
    assert [(x.first_step, x.last_step) for x in found] == [(1, 4), (5, 10)]
    assert found[0].means["x"] == 1 and found[1].means["x"] == (4 * 2 + 2 * 8) / 6  # 4.0, exact in binary
    assert found[1].where(5) == "steps 5-10 (epochs 1-2)" and found[0].where(None) == "steps 1-4"


def test_a_run_shorter_than_one_window_is_one_window_and_reset_forgets():
    w = StepWindows(20)
    record(w, [3, 5])
    assert [(x.first_step, x.last_step, x.means["x"]) for x in w.windows()] == [(1, 2, 4.0)]
    w.reset()
    assert w.windows() == [] and w.steps == 0
