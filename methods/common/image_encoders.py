"""A small convolutional image encoder, trained from scratch (IRFL's images).

Registered in `methods.common.encoders.ENCODERS` on import. Takes uint8 images
(as tasks store them, to save memory) or floats in [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from harness.task import Modality
from methods.common.encoders import encoder_family

CHANNELS = (32, 64, 128, 128)


class SmallCNN(nn.Module):
    """Four stride-2 3x3 conv blocks with batch norm, global average pooling, a linear map."""

    def __init__(self, in_channels: int, embed_dim: int, channels: tuple[int, ...] = CHANNELS):
        super().__init__()
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip((in_channels, *channels), channels):
            layers += [nn.Conv2d(fan_in, fan_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(fan_out),
                       nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Linear(channels[-1], embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        # Centre on 0.5 so the first layer sees roughly zero-mean input.
        return self.out(self.features(x - 0.5))


@encoder_family("cnn")
def cnn_encoder(modality: Modality, embed_dim: int) -> nn.Module:
    return SmallCNN(modality.shape[0], embed_dim)
