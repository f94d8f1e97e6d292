"""A held-out audit of CLUB upper bounds: is the trained estimator still above a fresh lower bound?

A CLUB term is an upper bound on I(A; B | C) only while its critic tracks the
density ratio; a critic outrun by the encoders scores the pairs low and the
"upper bound" sinks below the information actually there. Training-time
checks read the critic's own InfoNCE, which sinks with it. The audit asks an
outside witness instead, on the frozen model:

1. a FRESH critic, the same architecture as the term's own, newly initialized,
   takes `AUDIT_STEPS` Adam steps of the term's (conditional) InfoNCE on
   training-row batches of the frozen factor pairs;
2. on the same held-out batches (validation rows, never test rows) it scores
   its InfoNCE, a lower bound on the MI, and the TRAINED estimator scores its
   NCE-CLUB upper bound;
3. per batch k, d_k = fresh InfoNCE - CLUB. The term is violated when the mean
   difference exceeds its one-sided 97.5% Student-t bound above zero
   (t_{0.975, n-1} s / sqrt(n)): the lower bound significantly exceeds the
   upper one, which no valid pair of bounds can do.

A fresh critic that learned little passes the audit: it is a one-sided test
that catches an upper bound proven too low, never certifies one tight.
Fewer than two held-out batches give no spread: the check is then not measurable.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from harness.api.checks import AssumptionCheck
from harness.api.method import AuditData, Method
from harness.api.task import Batch, Split

AUDIT_STEPS = 300
AUDIT_LR = 1e-3  # Adam's usual rate; the critics' own training rates sit at 1e-4..5e-4, so this is no weaker
HELD_OUT_BATCHES = 11  # the 3,000 validation rows of the synthetic tasks hold 11 batches of 256
LEVEL = 0.975  # one-sided


@dataclass
class TermPairs:
    """What a CLUB term's critic scores on one batch: a side, b side, the condition beside a, negatives' weights."""

    a: torch.Tensor
    b: torch.Tensor
    condition: torch.Tensor | None = None
    weights: torch.Tensor | None = None

    def args(self) -> tuple:
        return self.a, self.b, self.condition, self.weights


@dataclass(frozen=True)
class TermAudit:
    """One term's audit, in nats: means over the held-out batches and the tolerance of their difference."""

    term: str
    fresh_nce: float  # the fresh critic's InfoNCE, a lower bound on the MI
    club: float  # the trained estimator's NCE-CLUB upper bound
    trained_nce: float  # the trained critic's own InfoNCE on the same batches
    difference: float  # mean of fresh_nce - club per batch
    tolerance: float  # one-sided t bound of that mean above zero; nan with fewer than two batches
    batches: int

    @property
    def measurable(self) -> bool:
        return self.batches >= 2 and math.isfinite(self.tolerance)

    @property
    def violated(self) -> bool:
        return self.measurable and self.difference > self.tolerance

    def check(self) -> AssumptionCheck:
        name = f"audit_{self.term}"
        figures = (f"fresh critic InfoNCE {self.fresh_nce:.3f} vs CLUB {self.club:.3f} nats on held-out rows "
                   f"(trained critic's InfoNCE {self.trained_nce:.3f}); mean difference {self.difference:+.3f}, "
                   f"one-sided {LEVEL:.1%} t bound {self.tolerance:.3f}, {self.batches} batches")
        if not self.measurable:
            return AssumptionCheck(name, False, f"{self.term}: too few held-out batches to test; {figures}",
                                   self.difference, measurable=False)
        verdict = ("is no upper bound: a fresh lower bound exceeds it" if self.violated
                   else "not exceeded by a fresh lower bound")
        return AssumptionCheck(name, not self.violated, f"{self.term} {verdict}; {figures}", self.difference)


def audit_term(term: str, estimator: nn.Module, fit_on: list[TermPairs], held_out: list[TermPairs],
               seed: int, steps: int = AUDIT_STEPS, lr: float = AUDIT_LR) -> TermAudit:
    """Audit one trained estimator (a `ConditionalCLUBBound`: forward -> (club, critic InfoNCE), `critic_nce`)."""
    fresh = _fresh_copy(estimator, seed)
    optimizer = torch.optim.Adam(fresh.parameters(), lr=lr)
    fresh.train()
    for step in range(steps):
        loss = -fresh.critic_nce(*fit_on[step % len(fit_on)].args())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    fresh.eval()
    rows = []
    with torch.no_grad():
        for pairs in held_out:
            club, trained_nce = estimator(*pairs.args())
            rows.append((float(fresh.critic_nce(*pairs.args())), float(club), float(trained_nce)))
    fresh_nce, club, trained = (torch.tensor(column, dtype=torch.float64) for column in zip(*rows))
    differences = fresh_nce - club
    return TermAudit(term, float(fresh_nce.mean()), float(club.mean()), float(trained.mean()),
                     float(differences.mean()), one_sided_bound(differences), len(rows))


def one_sided_bound(differences: torch.Tensor, level: float = LEVEL) -> float:
    """How far above zero a mean of these differences may lie by chance: t_{level, n-1} s / sqrt(n)."""
    n = len(differences)
    if n < 2:
        return math.nan
    from scipy.special import stdtrit  # the t quantile

    return float(stdtrit(n - 1, level) * differences.std(unbiased=True) / math.sqrt(n))


def _fresh_copy(estimator: nn.Module, seed: int) -> nn.Module:
    """The estimator's architecture with every layer newly initialized, the same for a seed."""
    device = next(estimator.parameters()).device
    # Initialized on the CPU, whose generator alone is forked and seeded: the same weights on any device, and
    # the run's random stream left as the audit found it.
    fresh = copy.deepcopy(estimator).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    for parameter in fresh.parameters():
        parameter.requires_grad_(True)
    return fresh.to(device)


def audit_method(method: Method, data: AuditData, estimators: dict[str, nn.Module],
                 pairs: Callable[[Batch], dict[str, TermPairs]],
                 held_out_batches: int = HELD_OUT_BATCHES, steps: int = AUDIT_STEPS) -> list[TermAudit]:
    """Audit each named estimator of a trained method; `pairs(batch)` gives each term's frozen pairs."""
    method.to(data.device)
    method.eval()
    with torch.random.fork_rng(devices=_devices(data.device)):
        torch.manual_seed(data.seed)  # the augmentations drawn for SSL's conditions, the batch orders
        generator = torch.Generator().manual_seed(data.seed)
        with torch.no_grad():
            fit_size = min(data.batch_size, len(data.train))
            fit_on = [pairs(b) for b in _batches(method, data.train, fit_size, steps, generator, data.device)]
            size = min(data.batch_size, max(2, len(data.held_out) // held_out_batches))
            held = [pairs(b) for b in _batches(method, data.held_out, size, held_out_batches, generator,
                                               data.device)]
        return [audit_term(term, estimators[term], [p[term] for p in fit_on], [p[term] for p in held],
                           data.seed + i, steps)
                for i, term in enumerate(estimators)]


def _batches(method: Method, split: Split, size: int, count: int, generator: torch.Generator,
             device: torch.device) -> Iterator[Batch]:
    """Up to `count` full batches of shuffled rows (a short last batch would score on fewer negatives),
    with the task's augmentations bound as in training."""
    task = method.task
    augment = task.augment if task.offers_augmentations() else None
    augment_pair = task.augment_pair if task.offers_augmentations() else None
    names = method.input_modalities(task).train
    shuffled = split.take(torch.randperm(len(split), generator=generator))
    for taken, (inputs, labels, rows) in enumerate(shuffled.batches(size)):
        if taken == count or len(labels) < size:
            return
        yield Batch({m: inputs[m].to(device) for m in names}, labels.to(device), rows, augment, augment_pair)


def _devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []
