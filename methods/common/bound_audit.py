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

A violation names its cause. The fresh critic trains on (from where it stopped)
until its InfoNCE on the training rows stops rising (`converged_copy`), and its
NCE-CLUB is scored on the same held-out batches. If that converged CLUB also
sits significantly below the fresh lower bound, no amount of training fixes the
estimator on these rows: "the estimator cannot bound this term". If it does
not, the term's own critic had fallen behind: "the critic lagged".

Null controls (`null_control`): each conditional term is scored again on the
same held-out batches with A replaced by the estimator's null draw (`null_a`:
A shuffled within the condition's neighbourhood, or for a residual estimator
A's residual drawn from another row), which keeps A's relation to the
condition and drops any to B beyond it. A term not above its control by the
one-sided t bound of their paired differences reads "not distinguishable from
0", a not-measurable check: never a measured amount.
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
# Convergence: the critic trains on in windows of CONVERGE_WINDOW steps until a window's mean InfoNCE is no
# longer above the previous window's by its one-sided t bound, or CONVERGE_MAX_STEPS steps in all.
CONVERGE_WINDOW = 50
CONVERGE_MAX_STEPS = 10 * AUDIT_STEPS
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
    converged_club: float = math.nan  # NCE-CLUB of the fresh critic trained to convergence
    converged_difference: float = math.nan  # mean of fresh_nce - converged_club per batch
    converged_tolerance: float = math.nan
    converged_steps: int = 0

    @property
    def cause(self) -> str | None:
        """Why a violated bound is violated; None where it is not (or no converged critic was trained)."""
        if not self.violated or not math.isfinite(self.converged_difference):
            return None
        if self.converged_difference > self.converged_tolerance:
            return "the estimator cannot bound this term"
        return "the critic lagged"

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
                   f"one-sided {LEVEL:.1%} t bound {self.tolerance:.3f}, {self.batches} batches; CLUB of a fresh "
                   f"critic converged in {self.converged_steps} steps {self.converged_club:.3f}")
        if not self.measurable:
            return AssumptionCheck(name, False, f"{self.term}: too few held-out batches to test; {figures}",
                                   self.difference, measurable=False)
        verdict = (f"is no upper bound: a fresh lower bound exceeds it; cause: {self.cause}" if self.violated
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
    converged, converged_steps = converged_copy(fresh, fit_on, steps, lr)
    fresh.eval()
    rows = []
    with torch.no_grad():
        for pairs in held_out:
            club, trained_nce = estimator(*pairs.args())
            rows.append((float(fresh.critic_nce(*pairs.args())), float(club), float(trained_nce),
                         float(converged(*pairs.args())[0])))
    fresh_nce, club, trained, converged_club = (torch.tensor(column, dtype=torch.float64) for column in zip(*rows))
    differences, against_converged = fresh_nce - club, fresh_nce - converged_club
    return TermAudit(term, float(fresh_nce.mean()), float(club.mean()), float(trained.mean()),
                     float(differences.mean()), one_sided_bound(differences), len(rows),
                     float(converged_club.mean()), float(against_converged.mean()),
                     one_sided_bound(against_converged), converged_steps)


def converged_copy(fresh: nn.Module, fit_on: list[TermPairs], start: int, lr: float,
                   window: int = CONVERGE_WINDOW, max_steps: int = CONVERGE_MAX_STEPS) -> tuple[nn.Module, int]:
    """A copy of the fresh critic trained on from step `start` until its InfoNCE stops rising: a window's mean
    no longer above the previous window's by the one-sided t bound of the later window's values (a rise
    smaller than that is not distinguishable from the noise of the batches). Returns it and its steps."""
    converged = copy.deepcopy(fresh)
    optimizer = torch.optim.Adam(converged.parameters(), lr=lr)
    converged.train()
    previous, step = None, start
    while step < max_steps:
        values = []
        for _ in range(window):
            nce = converged.critic_nce(*fit_on[step % len(fit_on)].args())
            optimizer.zero_grad(set_to_none=True)
            (-nce).backward()
            optimizer.step()
            values.append(float(nce.detach()))
            step += 1
        current = torch.tensor(values, dtype=torch.float64)
        if previous is not None and float(current.mean()) - previous <= one_sided_bound(current):
            break
        previous = float(current.mean())
    converged.eval()
    return converged, step


def one_sided_bound(differences: torch.Tensor, level: float = LEVEL) -> float:
    """How far above zero a mean of these differences may lie by chance: t_{level, n-1} s / sqrt(n)."""
    n = len(differences)
    if n < 2:
        return math.nan
    from scipy.special import stdtrit  # the t quantile

    return float(stdtrit(n - 1, level) * differences.std(unbiased=True) / math.sqrt(n))


def _fresh_copy(estimator: nn.Module, seed: int) -> nn.Module:
    """The estimator with its critic's every layer newly initialized, the same for a seed. What else it holds
    (a residual estimator's regressors, which define the pairs the critic scores) stays as trained."""
    device = next(estimator.parameters()).device
    # Initialized on the CPU, whose generator alone is forked and seeded: the same weights on any device, and
    # the run's random stream left as the audit found it.
    fresh = copy.deepcopy(estimator).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in getattr(fresh, "critic", fresh).modules():
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


@dataclass(frozen=True)
class NullControl:
    """A conditional term beside its null control on the same held-out batches, in nats."""

    term: str
    value: float  # the term's estimator on the held-out pairs
    control: float  # the same estimator with A drawn by its null (`null_a`)
    difference: float  # mean of value - control per batch
    tolerance: float  # one-sided t bound of that mean above zero; nan with fewer than two batches
    batches: int

    @property
    def distinguishable(self) -> bool:
        return self.batches >= 2 and math.isfinite(self.tolerance) and self.difference > self.tolerance

    def check(self) -> AssumptionCheck:
        figures = (f"{self.value:.3f} nats vs {self.control:.3f} with A drawn by its null control on the same "
                   f"held-out rows; mean difference {self.difference:+.3f}, one-sided {LEVEL:.1%} t bound "
                   f"{self.tolerance:.3f}, {self.batches} batches")
        name = f"null_{self.term}"
        if not self.distinguishable:
            return AssumptionCheck(name, False, f"{self.term} not distinguishable from 0: not above its null control "
                                                f"by its sampling error; {figures}", self.difference,
                                   measurable=False)
        return AssumptionCheck(name, True, f"{self.term} above its null control; {figures}", self.difference)


def null_control(term: str, estimator: nn.Module, held_out: list[TermPairs], seed: int) -> NullControl:
    """The term's estimator on each held-out batch and on the same batch with A drawn by its null."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for pairs in held_out:
            a, b, c, weights = pairs.args()
            shuffled = estimator.null_a(a, c, weights, generator)
            rows.append((_value(estimator(a, b, c, weights)), _value(estimator(shuffled, b, c, weights))))
    value, control = (torch.tensor(column, dtype=torch.float64) for column in zip(*rows))
    differences = value - control
    return NullControl(term, float(value.mean()), float(control.mean()), float(differences.mean()),
                       one_sided_bound(differences), len(rows))


def _value(out) -> float:
    """A bound's estimate: a CLUB form returns (bound, its critic's InfoNCE)."""
    return float(out[0] if isinstance(out, tuple) else out)


def held_out_pairs(method: Method, data: AuditData, pairs: Callable[[Batch], dict[str, TermPairs]],
                   held_out_batches: int = HELD_OUT_BATCHES) -> list[dict[str, TermPairs]]:
    """The held-out batches' pairs, as `audit_method` draws them for the same seed."""
    method.to(data.device)
    method.eval()
    with torch.random.fork_rng(devices=_devices(data.device)):
        torch.manual_seed(data.seed)
        generator = torch.Generator().manual_seed(data.seed)
        size = min(data.batch_size, max(2, len(data.held_out) // held_out_batches))
        with torch.no_grad():
            return [pairs(b) for b in _batches(method, data.held_out, size, held_out_batches, generator,
                                               data.device)]


def null_controls(method: Method, data: AuditData, estimators: dict[str, nn.Module],
                  pairs: Callable[[Batch], dict[str, TermPairs]]) -> list[NullControl]:
    """Each named conditional estimator of a trained method beside its null control, on held-out batches."""
    if not estimators:
        return []
    held = held_out_pairs(method, data, pairs)
    return [null_control(term, estimator, [p[term] for p in held], data.seed + i)
            for i, (term, estimator) in enumerate(estimators.items())]
