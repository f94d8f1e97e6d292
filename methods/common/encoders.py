"""Encoders by modality, as building blocks every method can ask for.

`build_encoder` picks the family a modality names (`Modality.encoder`), or the
default family for its kind. Families register themselves in ENCODERS.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from harness.api.task import Modality, Task

EncoderBuilder = Callable[[Modality, int], nn.Module]
ENCODERS: dict[str, EncoderBuilder] = {}
DEFAULT_FAMILY = {"tabular": "mlp", "timeseries": "gru", "sequence": "transformer", "image": "small-cnn",
                  "tokens": "bag-of-words"}


def encoder_family(name: str):
    def register(builder: EncoderBuilder) -> EncoderBuilder:
        ENCODERS[name] = builder
        return builder

    return register


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def projection_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """SimCLR's projection head: one hidden layer as wide as its input. The loss reads its output; the probe
    reads the embedding before it (Chen et al. 2020 found that representation the better one)."""
    return mlp([in_dim, in_dim, out_dim])


@encoder_family("mlp")
def mlp_encoder(modality: Modality, embed_dim: int, hidden: int = 512) -> nn.Module:
    return nn.Sequential(nn.Flatten(), mlp([math.prod(modality.shape), hidden, hidden, embed_dim]))


def vocab_size(modality: Modality) -> int:
    """A token modality's vocabulary size, which token encoders need to size their embeddings."""
    if modality.vocab_size is None:
        raise ValueError(f"token modality {modality.name} declares no vocab_size; set Modality(vocab_size=...)")
    return modality.vocab_size


def build_encoder(modality: Modality, embed_dim: int) -> nn.Module:
    family = modality.encoder or DEFAULT_FAMILY.get(modality.kind)
    if family not in ENCODERS:
        raise ValueError(f"no encoder for modality {modality.name} (kind {modality.kind}, family {family})")
    return ENCODERS[family](modality, embed_dim)


class ModalityEncoders(nn.ModuleDict):
    """One encoder per modality of a task (or per modality named in `names`)."""

    def __init__(self, task: Task, embed_dim: int, names: tuple[str, ...] | None = None):
        super().__init__({m.name: build_encoder(m, embed_dim) for m in task.modalities
                          if names is None or m.name in names})
        self.embed_dim = embed_dim

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: encoder(inputs[name]) for name, encoder in self.items()}

    def joint(self, inputs: dict[str, torch.Tensor], names: tuple[str, ...] | None = None) -> torch.Tensor:
        """The embeddings of all modalities (or of `names`) side by side, in the task's modality order."""
        chosen = [name for name in self.keys() if names is None or name in names]
        return torch.cat([self[name](inputs[name]) for name in chosen], dim=1)

    def parts(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's embedding as Z1, Z2, ... in the task's modality order (as the papers' tables name them)."""
        return {f"Z{i}": z for i, z in enumerate(self(inputs).values(), start=1)}

    @property
    def joint_dim(self) -> int:
        return self.embed_dim * len(self)


# The other families register themselves on import; imported last because they use encoder_family.
from methods.common import sequence_encoders, vision_text  # noqa: E402,F401
