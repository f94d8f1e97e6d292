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
TOKEN_DELETE, TOKEN_MASK = 0.1, 0.15
MASK_TOKEN = 1  # id 1 is the tokenizer's unknown/mask token; 0 is padding


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


@augmentation("image")
def image_views(x: torch.Tensor) -> torch.Tensor:
    """Random resized crop (scale 0.2-1), horizontal flip, colour jitter; uint8 or [0, 1] float in, float out."""
    images = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    return color_jitter(resized_crop_and_flip(images))


def resized_crop_and_flip(images: torch.Tensor, scale: tuple[float, float] = (0.2, 1.0)) -> torch.Tensor:
    """One affine resample per image: a crop of random area and aspect, scaled back to full size."""
    b = len(images)
    area = torch.empty(b, device=images.device).uniform_(*scale)
    log_ratio = torch.empty(b, device=images.device).uniform_(-0.2877, 0.2877)  # aspect in [3/4, 4/3]
    sx = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    sy = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    tx = (torch.rand(b, device=images.device) * 2 - 1) * (1 - sx)
    ty = (torch.rand(b, device=images.device) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(b, device=images.device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, align_corners=False, padding_mode="reflection")


def color_jitter(images: torch.Tensor, strength: float = 0.4, p: float = 0.8) -> torch.Tensor:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s], for a fraction p of images."""
    b = len(images)

    def factor() -> torch.Tensor:
        return torch.empty(b, 1, 1, 1, device=images.device).uniform_(1 - strength, 1 + strength)

    out = images * factor()
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * factor() + mean
    gray = out.mean(dim=1, keepdim=True)
    out = (out - gray) * factor() + gray
    apply = (torch.rand(b, 1, 1, 1, device=images.device) < p)
    return torch.where(apply, out, images).clamp(0, 1)


def delete_tokens(tokens: torch.Tensor, p: float = TOKEN_DELETE) -> torch.Tensor:
    """Drop each word with probability p and close the gaps; padding (0) moves to the end."""
    keep = (torch.rand(tokens.shape, device=tokens.device) >= p) & (tokens != 0)
    # A stable sort on "not kept" moves the kept tokens to the front in their order.
    order = (~keep).to(torch.int8).argsort(dim=1, stable=True)
    return torch.where(keep.gather(1, order), tokens.gather(1, order), torch.zeros_like(tokens))


def mask_tokens(tokens: torch.Tensor, p: float = TOKEN_MASK) -> torch.Tensor:
    """Replace each word with the mask token with probability p."""
    hit = (torch.rand(tokens.shape, device=tokens.device) < p) & (tokens != 0)
    return torch.where(hit, torch.full_like(tokens, MASK_TOKEN), tokens)


@augmentation("tokens")
def token_views(tokens: torch.Tensor) -> torch.Tensor:
    """Per caption one of: word deletion, word masking."""
    return _per_sample_choice(tokens, [delete_tokens(tokens), mask_tokens(tokens)])
