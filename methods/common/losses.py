"""Contrastive losses shared by several methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """CLIP's loss: row i of `a` and row i of `b` are the positive pair, in both directions."""
    logits = logit_scale * F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    targets = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def nt_xent_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's 2B x 2B similarity logits with self-pairs masked out, and each row's positive index."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    n = len(z1)
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return logits, positives


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: each of the 2B views must pick its partner among the other 2B - 1."""
    logits, positives = nt_xent_logits(z1, z2, temperature)
    return F.cross_entropy(logits, positives)
