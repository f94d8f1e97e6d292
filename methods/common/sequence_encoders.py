"""Encoders for sequences: a GRU for time series, a Transformer for feature and token sequences.

Registered in `methods.common.encoders.ENCODERS` on import (encoders.py imports
this module). A time step whose features are all zero is padding: MultiBench
pads its affect sequences with zeros, and the augmentations mask steps the
same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.api.task import Modality
from methods.common.encoders import encoder_family, vocab_size

GRU_HIDDEN = 30  # MultiBench's GRU for MIMIC's series
MODEL_DIM, HEADS, LAYERS = 40, 5, 5  # MultiBench's Transformer as FactorCL instantiates it: Transformer(d, 40)
TOKEN_DIM = 64


class GRUEncoder(nn.Module):
    """(B, T, F) -> the last hidden state of a one-layer GRU -> a linear map to the embedding."""

    def __init__(self, features: int, embed_dim: int, hidden: int = GRU_HIDDEN):
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.out = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, last = self.gru(x.float())
        return self.out(last[-1])


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table


class SequenceTransformer(nn.Module):
    """(B, T, D) features -> projection, fixed positions, Transformer encoder, mean over real steps.

    MultiBench reads the last step's output and adds no positions; we pool over the
    steps that are not padding and add positions so that step order (and the
    permutation augmentation) still matters to the encoder.
    """

    def __init__(self, features: int, length: int, embed_dim: int, model_dim: int = MODEL_DIM,
                 heads: int = HEADS, layers: int = LAYERS):
        super().__init__()
        self.project = nn.Linear(features, model_dim, bias=False)
        self.register_buffer("positions", sinusoidal_positions(length, model_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(model_dim, heads, dim_feedforward=4 * model_dim, dropout=0.1,
                                           batch_first=True)
        # Nested-tensor fast path is inference-only and warns about masks; plain tensors behave the same.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(model_dim, embed_dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = x.float()
        if padding is None:
            padding = x.abs().sum(dim=-1) == 0
        # A sequence with no real step would attend to nothing (NaN); let it attend to everything instead.
        padding = padding & ~padding.all(dim=1, keepdim=True)
        hidden = self.encoder(self.project(x) + self.positions[: x.shape[1]], src_key_padding_mask=padding)
        real = (~padding).unsqueeze(-1).float()
        return self.out((hidden * real).sum(dim=1) / real.sum(dim=1).clamp_min(1.0))


class TokenTransformer(nn.Module):
    """(B, L) word ids -> embeddings -> SequenceTransformer; id 0 is padding (PAD_ID of the token tasks)."""

    def __init__(self, vocab_size: int, length: int, embed_dim: int, token_dim: int = TOKEN_DIM):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, token_dim, padding_idx=0)
        self.sequence = SequenceTransformer(token_dim, length, embed_dim, model_dim=token_dim, heads=4, layers=2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.long()
        return self.sequence(self.embed(tokens), padding=tokens == 0)


@encoder_family("gru")
def gru_encoder(modality: Modality, embed_dim: int) -> nn.Module:
    return GRUEncoder(modality.shape[-1], embed_dim)


@encoder_family("transformer")
def transformer_encoder(modality: Modality, embed_dim: int) -> nn.Module:
    length, features = modality.shape
    return SequenceTransformer(features, length, embed_dim)


@encoder_family("text")
def text_encoder(modality: Modality, embed_dim: int) -> nn.Module:
    return TokenTransformer(vocab_size(modality), modality.shape[0], embed_dim)
