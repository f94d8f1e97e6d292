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


def supcon(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out): every other view of the same class is a positive.

    `features` holds all views of the batch, one row each, with `labels` per row. Each anchor
    averages log-softmax over its positives, the softmax running over every view but itself.
    Anchors without a positive (a class seen once) are left out rather than counted as zero.
    """
    z = F.normalize(features, dim=1)
    n = len(z)
    itself = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(itself, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~itself
    count = positives.sum(dim=1)
    # Only the positives' terms, by where rather than a product with the mask (-inf on the diagonal * 0 is nan).
    # An anchor without positives adds 0 to the sum and is not counted: sums rather than indexing by the
    # anchors that have one, so no shape depends on the data and nothing waits for a GPU to report it.
    mean_log_prob = logits.log_softmax(dim=1).where(positives, 0.0).sum(dim=1) / count.clamp(min=1)
    return -mean_log_prob.sum() / (count > 0).sum()
