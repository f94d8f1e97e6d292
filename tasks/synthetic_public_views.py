"""FactorCL's default synthetic data with the public code's augmentation instead of the harness's.

The data are exactly `synthetic`'s (same generator, seed and splits); only the
views differ. The public code (pliang279/FactorCL, Synthetic/dataset.py,
`augment_single`, read at commit 0f9f740) draws for each sample one of four
transforms, uniformly:

* swap: the two halves of the feature vector exchanged;
* noise: Gaussian noise of standard deviation 0.01, absolute (not scaled to the data);
* drop: floor(D / 10) of the D features, chosen without replacement, set to 0;
* identity: the sample unchanged.

The harness's own tabular augmentation, which every other synthetic task and
every committed record uses, applies to every sample Gaussian noise at 0.1x
each feature's spread within the batch and then zeroes each feature with
probability 0.1 (tasks.common.augment.tabular). On this data the features'
spread is about 1.6, so the public noise is about 16 times smaller, and a
quarter of the public views are the sample itself.

The task has a suite of its own, so its rows form their own leaderboard table
and never mix with `synthetic`'s.
"""

from __future__ import annotations

import torch

from tasks.common.augment import _per_sample_choice
from tasks.synthetic import Synthetic

PUBLIC_NOISE = 0.01  # absolute standard deviation, as the public code's noise()
PUBLIC_DROP = 10  # one feature in this many is zeroed (x.shape[0] // 10 in the public code)


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """The public swap(): features [mid:] then [:mid], mid = D // 2."""
    mid = x.shape[1] // 2
    return torch.cat([x[:, mid:], x[:, :mid]], dim=1)


def drop_features(x: torch.Tensor) -> torch.Tensor:
    """The public random_drop(): exactly D // 10 features per sample, drawn without replacement, set to 0."""
    n_drop = x.shape[1] // PUBLIC_DROP
    ranks = torch.rand(x.shape, device=x.device).argsort(dim=1).argsort(dim=1)
    return x * (ranks >= n_drop)


def public_views(x: torch.Tensor) -> torch.Tensor:
    """Per sample one of swap / noise 0.01 / drop 10% / identity, uniformly."""
    noisy = x + PUBLIC_NOISE * torch.randn_like(x)
    return _per_sample_choice(x, [swap_halves(x), noisy, drop_features(x), x])


class SyntheticPublicViews(Synthetic):
    name = "synthetic-public-views"
    version = "1"
    suite = "synthetic-public-views"
    description = ("FactorCL's default synthetic data with the public code's augmentation: per sample one of "
                   "swap halves / noise 0.01 / drop 10% / identity.")

    def augment(self, modality, x):
        return public_views(x)
