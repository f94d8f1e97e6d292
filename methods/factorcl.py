"""FactorCL: factorized contrastive learning (Liang et al., NeurIPS 2023).

Each of the two modalities gets a shared part Z_S and a unique part Z_U, two
linear heads on its encoder. The objective (maximized) is the paper's

    I_NCE(X1; X2) - I_CLUB(X1; X2 | Y)                         shared parts Z_S1, Z_S2
  + I_NCE(X1; Y) + I_NCE(X2; Y) - I_CLUB(X1; X2) + I_NCE(X1; X2 | Y)   unique parts Z_U1, Z_U2

with InfoNCE lower bounds and NCE-CLUB upper bounds (methods.common.mi).
The CLUB critics are held fixed in the main step and trained on their own
InfoNCE objective in a second step (an Auxiliary), which is the paper's
alternating optimization. The probe sees [Z_S1, Z_U1, Z_S2, Z_U2].

FactorCL-SUP conditions on the label. FactorCL-SSL has no labels: each
modality's augmentation X_i' stands in for Y. I(X_i; Y) becomes
I(Z_Ui; Z_Ui'), and a conditional term pairs each modality's part with the
part of ITS OWN augmentation, f([z_1, z_1'], [z_2, z_2']). (The public code
pairs the embedding with itself there, which conditions on nothing new.)

Tasks with more than two modalities: the first two are factorized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.method import Auxiliary, Method, Requirements
from harness.space import POSITIVE, SIZE, Choice
from harness.task import Batch
from methods.common.encoders import ModalityEncoders
from methods.common.mi import CLUBBound, LabelNCEBound, NCEBound, condition, one_hot

Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Factors:
    """The factorized parts of a batch, one tensor per modality in each pair."""

    shared: Pair
    unique: Pair

    def parts(self) -> dict[str, torch.Tensor]:
        return {"ZS1": self.shared[0], "ZU1": self.unique[0], "ZS2": self.shared[1], "ZU2": self.unique[1]}


@dataclass
class Context:
    """What plays Y in a batch: conditions appended to each side, and each unique part's target."""

    shared_conditions: Pair
    unique_conditions: Pair
    targets: tuple[torch.Tensor, torch.Tensor]


class FactorCL(Method):
    """The family: heads, bounds and objective. Subclasses say what Y is (`context`)."""

    version = "1"
    search_space = {"embed_dim": Choice((64, 128, 256)), "factor_dim": Choice((32, 64, 128))}
    # club_lr_scale: the CLUB critics' learning rate relative to the main one. The encoders minimize
    # the CLUB bounds against critics held fixed in that step, so critics that learn too slowly get
    # outrun: their InfoNCE falls below zero and the "upper bound" stops bounding anything.
    defaults = {"embed_dim": 128, "factor_dim": 64, "critic_hidden": 512, "critic_depth": 1, "club_lr_scale": 1.0}
    domains = {"embed_dim": SIZE, "factor_dim": SIZE, "critic_hidden": SIZE, "critic_depth": SIZE,
               "club_lr_scale": POSITIVE}

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        embed, factor = int(hparams["embed_dim"]), int(hparams["factor_dim"])
        self.pair_names = tuple(m.name for m in task.modalities[:2])
        self.encoders = ModalityEncoders(task, embed)
        self.shared_heads = nn.ModuleDict({m: nn.Linear(embed, factor) for m in self.pair_names})
        self.unique_heads = nn.ModuleDict({m: nn.Linear(embed, factor) for m in self.pair_names})
        critic = {"hidden": int(hparams["critic_hidden"]), "depth": int(hparams["critic_depth"])}
        conditioned = factor + self.condition_dim(factor)
        self.shared_nce = NCEBound(factor, factor, **critic)
        self.shared_club_given_y = CLUBBound(conditioned, conditioned, **critic)
        self.relevance = nn.ModuleList([self.relevance_bound(factor, critic) for _ in range(2)])
        self.unique_club = CLUBBound(factor, factor, **critic)
        self.unique_nce_given_y = NCEBound(conditioned, conditioned, **critic)

    # -- what Y is: subclasses ---------------------------------------------------------------------

    def condition_dim(self, factor_dim: int) -> int:
        raise NotImplementedError

    def relevance_bound(self, factor_dim: int, critic: dict) -> nn.Module:
        """The bound for I(Z_Ui; Y), called as bound(z, target)."""
        raise NotImplementedError

    def context(self, batch: Batch, factors: Factors) -> Context:
        raise NotImplementedError

    # -- shared by the family -----------------------------------------------------------------------

    def factors(self, inputs: dict[str, torch.Tensor]) -> Factors:
        embedded = {m: self.encoders[m](inputs[m]) for m in self.pair_names}
        shared = tuple(self.shared_heads[m](embedded[m]) for m in self.pair_names)
        unique = tuple(self.unique_heads[m](embedded[m]) for m in self.pair_names)
        return Factors(shared, unique)

    def terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The six bounds of the objective, each in nats."""
        f = self.factors(batch.inputs)
        ctx = self.context(batch, f)
        return {
            "shared_nce": self.shared_nce(*f.shared),
            "shared_club_given_y": self.shared_club_given_y(*_conditioned(f.shared, ctx.shared_conditions)),
            "unique1_nce_y": self.relevance[0](f.unique[0], ctx.targets[0]),
            "unique2_nce_y": self.relevance[1](f.unique[1], ctx.targets[1]),
            "unique_club": self.unique_club(*f.unique),
            "unique_nce_given_y": self.unique_nce_given_y(*_conditioned(f.unique, ctx.unique_conditions)),
        }

    def loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        terms = self.terms(batch)
        objective = (terms["shared_nce"] - terms["shared_club_given_y"]
                     + terms["unique1_nce_y"] + terms["unique2_nce_y"]
                     - terms["unique_club"] + terms["unique_nce_given_y"])
        return {"loss": -objective, **{name: value.detach() for name, value in terms.items()}}

    def club_critic_loss(self, batch: Batch) -> torch.Tensor:
        """The CLUB critics' own InfoNCE objective, on embeddings they cannot move."""
        with torch.no_grad():
            f = self.factors(batch.inputs)
            ctx = self.context(batch, f)
        return (self.shared_club_given_y.critic_loss(*_conditioned(f.shared, ctx.shared_conditions))
                + self.unique_club.critic_loss(*f.unique))

    def auxiliaries(self) -> list[Auxiliary]:
        critics = [*self.shared_club_given_y.parameters(), *self.unique_club.parameters()]
        return [Auxiliary("club_critics", critics, self.club_critic_loss, lr_scale=float(self.hparams["club_lr_scale"]))]

    def parts(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each factorized part by name, for diagnostics such as the paper's Table 1."""
        return self.factors(inputs).parts()

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(self.parts(inputs).values()), dim=1)


def _conditioned(pair: Pair, conditions: Pair) -> Pair:
    return condition(pair[0], conditions[0]), condition(pair[1], conditions[1])


class FactorCLSup(FactorCL):
    name = "factorcl-sup"
    display_name = "FactorCL-SUP"
    description = "FactorCL with the label as Y: shared and unique parts per modality from MI bounds."
    requirements = Requirements(min_modalities=2, needs_labels=True)

    def condition_dim(self, factor_dim: int) -> int:
        return self.task.num_classes

    def relevance_bound(self, factor_dim: int, critic: dict) -> nn.Module:
        return LabelNCEBound(factor_dim, self.task.num_classes, **critic)

    def context(self, batch: Batch, factors: Factors) -> Context:
        y = one_hot(batch.labels, self.task.num_classes)
        return Context(shared_conditions=(y, y), unique_conditions=(y, y), targets=(batch.labels, batch.labels))


class FactorCLSsl(FactorCL):
    name = "factorcl-ssl"
    display_name = "FactorCL-SSL"
    description = "FactorCL without labels: each modality's augmentation stands in for Y."
    requirements = Requirements(min_modalities=2, needs_augmentations=True)

    def condition_dim(self, factor_dim: int) -> int:
        return factor_dim  # the same part of the augmented view

    def relevance_bound(self, factor_dim: int, critic: dict) -> nn.Module:
        return NCEBound(factor_dim, factor_dim, **critic)

    def context(self, batch: Batch, factors: Factors) -> Context:
        augmented = self.factors({m: batch.view(m) for m in self.pair_names})
        # Each side is conditioned on its own modality's augmentation, never on itself.
        return Context(shared_conditions=augmented.shared, unique_conditions=augmented.unique,
                       targets=augmented.unique)
