"""synthetic-public-views: synthetic's data, the public FactorCL code's per-sample augmentation."""

import math

import torch

from harness.api.catalog import TASKS
from tasks.synthetic_public_views import PUBLIC_NOISE, drop_features, swap_halves


def kinds_of_views(x: torch.Tensor, views: torch.Tensor) -> list[str]:
    """Which of the four transforms made each row (a row that matches none reads 'none')."""
    out = []
    for row, view in zip(x, views):
        dropped = (view == 0) & (row != 0)
        if torch.equal(view, row):
            out.append("identity")
        elif torch.equal(view, swap_halves(row[None])[0]):
            out.append("swap")
        elif int(dropped.sum()) == len(row) // 10 and torch.equal(view[~dropped], row[~dropped]):
            out.append("drop")
        # Noise of sd 0.01 on 100 features: past 6 sd (0.06) with probability about 100 x 2e-9.
        elif (view - row).abs().max() < 6 * PUBLIC_NOISE:
            out.append("noise")
        else:
            out.append("none")
    return out


def test_the_task_keeps_synthetics_data_and_has_its_own_table():
    public, default = TASKS.get("synthetic-public-views")(), TASKS.get("synthetic")()
    assert public.suite != default.suite
    a, b = public.load().train, default.load().train
    assert all(torch.equal(a.inputs[k], b.inputs[k]) for k in a.inputs) and torch.equal(a.labels, b.labels)


def test_each_sample_draws_one_of_swap_noise_drop_identity_uniformly():
    task = TASKS.get("synthetic-public-views")()
    x = task.load().train.inputs["x1"][:4000]
    torch.manual_seed(0)
    kinds = kinds_of_views(x, task.augment("x1", x))
    assert "none" not in kinds
    # Each count is Binomial(4000, 1/4): sd sqrt(4000 x 3/16) = 27.4; 5 sd either side fails a correct
    # draw with probability about 6e-7 per count.
    sd = math.sqrt(4000 * 3 / 16)
    for kind in ("swap", "noise", "drop", "identity"):
        assert abs(kinds.count(kind) - 1000) < 5 * sd, (kind, kinds.count(kind))


def test_drop_zeroes_exactly_a_tenth_of_the_features_of_every_sample():
    x = torch.rand(50, 100) + 1  # no zero to begin with
    assert ((drop_features(x) == 0).sum(dim=1) == 10).all()
