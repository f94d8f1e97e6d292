"""Batched augmentations for images (kornia, on the batch's device) and token captions.

Images are float tensors (batch, channels, height, width) in [0, 1]. The
image pipeline is SimCLR's (Chen et al. 2020): random resized crop back to
the input size, horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with
p 0.8, grayscale with p 0.2, Gaussian blur with p 0.5 (kernel ~10% of the side).
Every parameter is drawn per sample from torch's global RNG, which the harness seeds.
"""

from __future__ import annotations

from functools import lru_cache

import kornia.augmentation as K
import torch
from torch import nn

from tasks.common.augment import augmentation

PAD_ID = 0  # must agree with methods.common.vision_text; repeated so tasks need not import methods
MASK_ID = 1
WORD_DROP = 0.1
WORD_MASK = 0.1


@lru_cache(maxsize=8)
def simclr_pipeline(height: int, width: int) -> nn.Sequential:
    """SimCLR's augmentations for one image size (built once: kornia modules hold no state between calls)."""
    kernel = max(3, int(0.1 * min(height, width)) // 2 * 2 + 1)  # odd, about a tenth of the side
    return nn.Sequential(
        K.RandomResizedCrop((height, width), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=0.5),
    )


@augmentation("image")
def simclr_image(x: torch.Tensor) -> torch.Tensor:
    if x.ndim != 4:
        raise ValueError(f"image augmentation expects (batch, channels, height, width), got shape {tuple(x.shape)}")
    images = x.float() / 255 if x.dtype == torch.uint8 else x.float()  # file-backed tasks keep uint8 pixels
    out = simclr_pipeline(x.shape[-2], x.shape[-1])(images)
    return out.clamp(0.0, 1.0)


def word_dropout(tokens: torch.Tensor, drop: float = WORD_DROP, mask: float = WORD_MASK) -> torch.Tensor:
    """Drop real words to padding with probability `drop`, else replace them by MASK_ID with probability `mask`.

    Dropped words become padding rather than being removed, so positions and length stay fixed.
    """
    draw = torch.rand(tokens.shape, device=tokens.device)
    real = tokens != PAD_ID
    out = tokens.masked_fill(real & (draw < drop), PAD_ID)
    return out.masked_fill(real & (draw >= drop) & (draw < drop + mask), MASK_ID)


@augmentation("tokens")
def caption_tokens(x: torch.Tensor) -> torch.Tensor:
    return word_dropout(x)
