"""Image and caption encoders, registered as encoder families.

ResNet-18/50 come with two stems: the ImageNet stem (7x7 stride-2 conv and a
max-pool, for 224-pixel inputs) and the small-image stem (one 3x3 stride-1
conv, no pool), which keeps enough resolution for 32-pixel images. Every
encoder ends in a linear map to `embed_dim` so that methods can treat all
modalities alike (ModalityEncoders assumes one width for all of them).

Token inputs are long tensors (batch, length) with PAD_ID padding. The token
Transformer (family `text`) lives with the other sequence encoders.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from harness.api.task import Modality, Task
from methods.common.encoders import encoder_family, vocab_size

PAD_ID = 0  # tasks with token modalities pad with 0; MASK_ID is reserved for masking augmentations
MASK_ID = 1


def conv_bn(fan_in: int, fan_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(fan_in, fan_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(fan_out))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, fan_in: int, width: int, stride: int):
        super().__init__()
        fan_out = width * self.expansion
        self.body = nn.Sequential(conv_bn(fan_in, width, 3, stride), nn.ReLU(inplace=True), conv_bn(width, fan_out, 3))
        self.shortcut = _shortcut(fan_in, fan_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, fan_in: int, width: int, stride: int):
        super().__init__()
        fan_out = width * self.expansion
        self.body = nn.Sequential(
            conv_bn(fan_in, width, 1), nn.ReLU(inplace=True),
            conv_bn(width, width, 3, stride), nn.ReLU(inplace=True),  # stride on the 3x3, as ResNet v1.5
            conv_bn(width, fan_out, 1),
        )
        self.shortcut = _shortcut(fan_in, fan_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _shortcut(fan_in: int, fan_out: int, stride: int) -> nn.Module:
    return nn.Identity() if stride == 1 and fan_in == fan_out else conv_bn(fan_in, fan_out, 1, stride)


def stem(kind: str, channels: int, width: int = 64) -> nn.Sequential:
    if kind == "imagenet":
        return nn.Sequential(conv_bn(channels, width, 7, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
    if kind == "small":
        return nn.Sequential(conv_bn(channels, width, 3, 1), nn.ReLU(inplace=True))
    raise ValueError(f"unknown stem {kind}; choose imagenet or small")


class ResNet(nn.Module):
    """ResNet backbone (four stages of widths 64..512), global average pool, linear map to embed_dim."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: tuple[int, ...], embed_dim: int,
                 stem_kind: str = "imagenet", channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = [stem(stem_kind, channels)]
        fan_in = 64
        for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(block(fan_in, width, stride))
                fan_in = width * block.expansion
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = fan_in
        self.head = nn.Linear(fan_in, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # File-backed tasks keep uint8 pixels until the device (probe features are taken without augmentation).
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return self.head(self.features(x))


def resnet18(embed_dim: int, stem_kind: str = "imagenet", channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), embed_dim, stem_kind, channels)


def resnet50(embed_dim: int, stem_kind: str = "imagenet", channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), embed_dim, stem_kind, channels)


class SmallCNN(nn.Module):
    """Four conv layers (the last three stride 2) and a global pool: cheap enough for 32-pixel images on a CPU."""

    def __init__(self, embed_dim: int, channels: int = 3, width: int = 32):
        super().__init__()
        widths = (width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        fan_in = channels
        for i, fan_out in enumerate(widths):
            layers += [conv_bn(fan_in, fan_out, 3, 1 if i == 0 else 2), nn.ReLU(inplace=True)]
            fan_in = fan_out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(fan_in, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # File-backed tasks keep uint8 pixels to save memory; augmented views arrive as floats in [0, 1].
        x = x.float() / 255 if x.dtype == torch.uint8 else x
        return self.head(self.features(x))


def masked_mean(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over the non-padding positions; an all-padding caption gives zeros rather than NaN."""
    keep = (tokens != PAD_ID).unsqueeze(-1).to(x.dtype)
    return (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)


class BagOfWordsEncoder(nn.Module):
    """Word embeddings, mean-pooled over the caption, then an MLP: order-blind, fast, strong on short captions."""

    def __init__(self, vocab_size: int, embed_dim: int, width: int = 128):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, width, padding_idx=PAD_ID)
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, embed_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(masked_mean(self.embedding(tokens), tokens))


def image_modalities(task: Task) -> tuple[str, ...]:
    """The names of the task's image modalities, in its order; empty for a task without images."""
    return tuple(m.name for m in task.modalities if m.kind == "image")


def crop_and_flip(images: torch.Tensor, min_scale: float = 0.25) -> torch.Tensor:
    """A random resized crop (at least `min_scale` of the area) and a random horizontal flip, per image.

    Only the geometry changes, never the colours: what a CLIP guide learns to ignore is where the
    object sits and which way it faces. Draws from torch's global RNG.
    """
    pixels = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return _crop_and_flip_pipeline(tuple(pixels.shape[-2:]), min_scale)(pixels)


@lru_cache(maxsize=8)
def _crop_and_flip_pipeline(size: tuple[int, int], min_scale: float) -> nn.Sequential:
    import kornia.augmentation as K  # here, so that building encoders never imports kornia

    return nn.Sequential(K.RandomResizedCrop(size, scale=(min_scale, 1.0)), K.RandomHorizontalFlip())


def _channels(modality: Modality) -> int:
    return modality.shape[0]


encoder_family("resnet18")(lambda m, d: resnet18(d, "imagenet", _channels(m)))
encoder_family("resnet18-small")(lambda m, d: resnet18(d, "small", _channels(m)))
encoder_family("resnet50")(lambda m, d: resnet50(d, "imagenet", _channels(m)))
encoder_family("resnet50-small")(lambda m, d: resnet50(d, "small", _channels(m)))
encoder_family("small-cnn")(lambda m, d: SmallCNN(d, _channels(m)))
encoder_family("small-cnn-narrow")(lambda m, d: SmallCNN(d, _channels(m), width=16))  # a quarter of the work
encoder_family("bag-of-words")(lambda m, d: BagOfWordsEncoder(vocab_size(m), d))
