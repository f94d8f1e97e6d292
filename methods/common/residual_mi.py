"""Residual conditional MI bounds, and the table of conditional estimators FactorCL chooses from by name.

The kernel-weighted bounds of `methods.common.mi` approximate draws from p(b | c) by the batch's kernel
neighbours of c. For a continuous condition of many coordinates (FactorCL-SSL's 128) the neighbours are
nowhere near c, and a critic that sees c picks b out of them from c alone: 2.77 nats where I(A; B | C) = 0
(issue 38, tests/test_conditional_null.py). The residual bounds never give the critic c. Each side loses
what c predicts of it, r_a = a - g_a(c), r_b = b - g_b(c), with regressors g fitted apart by least squares
(`ConditionResiduals`), and an unconditional bound scores (r_a, r_b) against the whole batch. Where each
side is what c predicts plus noise independent of c (a = g_a(c) + e_a, as for Gaussians),
I(A; B | C) = I(E_a; E_b) = I(R_a; R_b) exactly; dependence carried by c's effect on the noise's spread, not
its mean, is not measured.

`CONDITIONAL_ESTIMATORS` lives here, not in `methods.common.mi`, because it names both families: this module
imports mi, never the reverse.

All estimates are in nats.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from methods.common.encoders import mlp
from methods.common.mi import (
    PAPER_CRITIC_DEPTH,
    PAPER_CRITIC_HIDDEN,
    ConcatCritic,
    ConditionalCLUBBound,
    ConditionalNCEBound,
    info_nce,
    nce_club,
)


class ConditionPredictor(nn.Module):
    """g(c): a linear map plus a one-hidden-layer correction; the linear part alone fits Gaussian conditions
    quickly, the correction lets c's effect on the mean be nonlinear."""

    def __init__(self, dim_c: int, dim_out: int, hidden: int):
        super().__init__()
        self.linear = nn.Linear(dim_c, dim_out)
        self.correction = mlp([dim_c, hidden, dim_out])

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.linear(c) + self.correction(c)


class ConditionResiduals(nn.Module):
    """(a - g_a(c), b - g_b(c)), each at unit scale, with the regressors held fixed: gradients reach a and b,
    never g, which the bound it feeds would otherwise bend to leave c's part in (or take b's out). g trains on
    `fit_loss` alone."""

    def __init__(self, dim_a: int, dim_b: int, dim_c: int, hidden: int):
        super().__init__()
        if dim_c < 1:
            raise ValueError("a residual conditional bound needs a condition of at least one coordinate")
        self.predict_a = ConditionPredictor(dim_c, dim_a, hidden)
        self.predict_b = ConditionPredictor(dim_c, dim_b, hidden)

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fixed = {name: p.detach() for name, p in self.named_parameters()}
        c = c.detach().to(a.dtype)
        predicted_a = functional_call(self.predict_a, _under(fixed, "predict_a"), (c,))
        predicted_b = functional_call(self.predict_b, _under(fixed, "predict_b"), (c,))
        return _unit_scale(a - predicted_a), _unit_scale(b - predicted_b)

    def fit_loss(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Mean squared error of both predictions, on embeddings and a condition it cannot move."""
        c = c.detach().to(a.dtype)
        return F.mse_loss(self.predict_a(c), a.detach()) + F.mse_loss(self.predict_b(c), b.detach())

    def null_a(self, a: torch.Tensor, c: torch.Tensor, weights: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """A whose residual is another row's, drawn from the whole batch: a' = a_j - g_a(c_j) + g_a(c_i), so
        r_a' = r_a,j. Where R_a and R_b are independent that leaves the pairs' distribution as it was, which
        a neighbourhood shuffle does not where the neighbours' conditions are far from c_i."""
        with torch.no_grad():
            predicted = self.predict_a(c.detach().to(a.dtype))
        order = torch.randperm(len(a), generator=generator).to(a.device)
        return a[order] - predicted[order] + predicted


def _unit_scale(residual: torch.Tensor) -> torch.Tensor:
    """Each coordinate divided by its spread over the batch (a constant: detached). Scaling a coordinate leaves
    every MI as it was, and a critic's first layer learns at unit scale: residuals of sd 0.1 read 0.74 nats
    where the truth is 2 after 600 steps, unscaled."""
    return residual / residual.detach().std(dim=0).clamp_min(1e-6)


def _under(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name.removeprefix(prefix + "."): p for name, p in params.items() if name.startswith(prefix + ".")}


class _ResidualBound(nn.Module):
    """What both residual forms share: the regressors that take out what the condition predicts of each side,
    trained on their own least-squares loss (`fit_loss`), and a critic on the residuals that never sees c.
    They take (and ignore) `weights`, so they stand wherever the kernel-weighted forms do."""

    uses_weights = False

    def __init__(self, dim_a: int, dim_b: int, dim_c: int, hidden: int = PAPER_CRITIC_HIDDEN,
                 depth: int = PAPER_CRITIC_DEPTH):
        super().__init__()
        self.residuals = ConditionResiduals(dim_a, dim_b, dim_c, hidden)
        self.critic = ConcatCritic(dim_a, dim_b, hidden, depth)

    def fit_loss(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.residuals.fit_loss(a, b, c)

    def null_a(self, a: torch.Tensor, c: torch.Tensor, weights: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        return self.residuals.null_a(a, c, weights, generator)


class ResidualNCEBound(_ResidualBound):
    """I_NCE(A; B | C) as I_NCE(R_a; R_b): a critic f(r_a, r_b) that never sees c, negatives from the whole
    batch."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        return info_nce(self.critic(*self.residuals(a, b, c)))


class ResidualCLUBBound(_ResidualBound):
    """I_CLUB(A; B | C) as NCE-CLUB on (R_a, R_b), with a critic of its own trained apart on InfoNCE (as
    `ConditionalCLUBBound`, whose calls it takes). Where R_a and R_b are independent, positives and negatives
    are drawn alike and any fixed critic's CLUB is 0 in expectation."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        fixed = {name: p.detach() for name, p in self.critic.named_parameters()}
        scores = functional_call(self.critic, fixed, self.residuals(a, b, c))
        return nce_club(scores), info_nce(scores.detach())

    def critic_nce(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
        """The critic's own objective (maximize it), on residuals it cannot move."""
        return info_nce(self.critic(*(r.detach() for r in self.residuals(a, b, c))))



# The conditional estimators FactorCL can use, by name: (InfoNCE form, CLUB form). "kernel-v4" is the one
# FactorCL-SSL's records up to version 4 were made with; "residual" the one that passes the null tests.
CONDITIONAL_ESTIMATORS = {"kernel-v4": (ConditionalNCEBound, ConditionalCLUBBound),
                          "residual": (ResidualNCEBound, ResidualCLUBBound)}
