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


# Image and token augmentations live in a sibling module; importing it registers them.
from tasks.common import image_augment  # noqa: E402,F401
