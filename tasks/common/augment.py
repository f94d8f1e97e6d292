"""Self-supervised augmentations by modality kind, applied to a batch on its device.

Each draws from torch's global RNG, which the harness seeds per run.
Kinds without an entry here are added by the task families that need them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Augmentation = Callable[[torch.Tensor], torch.Tensor]
AUGMENTATIONS: dict[str, Augmentation] = {}


def augmentation(kind: str):
    def register(fn: Augmentation) -> Augmentation:
        AUGMENTATIONS[kind] = fn
        return fn

    return register


def feature_noise(x: torch.Tensor, scale: float = 0.1) -> torch.Tensor:
    """Gaussian noise scaled to each feature's spread within the batch."""
    spread = x.std(dim=0, keepdim=True).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(x[:1])
    return x + scale * spread * torch.randn_like(x)


def feature_mask(x: torch.Tensor, p: float = 0.1) -> torch.Tensor:
    """Zero each feature independently with probability p."""
    return x * (torch.rand_like(x) >= p)


@augmentation("tabular")
def tabular(x: torch.Tensor) -> torch.Tensor:
    return feature_mask(feature_noise(x))


def augment_by_kind(kind: str, x: torch.Tensor) -> torch.Tensor:
    if kind not in AUGMENTATIONS:
        raise ValueError(f"no augmentation registered for modality kind {kind}")
    return AUGMENTATIONS[kind](x)


# -- FactorCL's augmentations (paper, Appendix; public code) -------------------------------------
# Each sample draws one transform of its kind's list, identity included, so a batch mixes
# strengths as the public code does per sample; here vectorized over the batch.

SEQUENCE_NOISE = 0.1
STEP_DROP = 0.2  # fraction of time steps zeroed


def _per_sample_choice(x: torch.Tensor, options: list[torch.Tensor]) -> torch.Tensor:
    """Row i of the result is row i of options[c_i], c_i uniform over the options."""
    choice = torch.randint(len(options), (len(x),), device=x.device)
    shape = (len(x),) + (1,) * (x.dim() - 1)
    out = options[0]
    for k, option in enumerate(options[1:], start=1):
        out = torch.where((choice == k).view(shape), option, out)
    return out


def permute_steps(x: torch.Tensor) -> torch.Tensor:
    """Shuffle the time steps of each sequence (B, T, D) independently."""
    order = torch.rand(x.shape[:2], device=x.device).argsort(dim=1)
    return x.gather(1, order.unsqueeze(-1).expand_as(x))


def drop_steps(x: torch.Tensor, fraction: float = STEP_DROP) -> torch.Tensor:
    """Zero a fixed fraction of each sequence's time steps (zero steps read as padding downstream)."""
    n_drop = int(x.shape[1] * fraction)
    ranks = torch.rand(x.shape[:2], device=x.device).argsort(dim=1).argsort(dim=1)
    return x * (ranks >= n_drop).unsqueeze(-1)


def sequence_views(x: torch.Tensor) -> torch.Tensor:
    """Per sample one of: permuted steps, Gaussian noise, 20% of steps masked, unchanged."""
    noisy = x + SEQUENCE_NOISE * torch.randn_like(x)
    return _per_sample_choice(x, [x, permute_steps(x), noisy, drop_steps(x)])


AUGMENTATIONS["sequence"] = sequence_views
AUGMENTATIONS["timeseries"] = sequence_views


def mixup(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Each row blended with a random other row of the batch, weight ~ Beta(alpha, alpha)."""
    partner = torch.randperm(len(x), device=x.device)
    lam = torch.distributions.Beta(alpha, alpha).sample((len(x),)).to(x.device).view(-1, *[1] * (x.dim() - 1))
    return lam * x + (1 - lam) * x[partner]


def static_features(x: torch.Tensor) -> torch.Tensor:
    """Per sample one of: Gaussian noise, mixup, unchanged (FactorCL's static-feature views)."""
    return _per_sample_choice(x, [x, x + SEQUENCE_NOISE * torch.randn_like(x), mixup(x)])


# Image and token augmentations live in a sibling module; importing it registers them.
from tasks.common import image_augment  # noqa: E402,F401
