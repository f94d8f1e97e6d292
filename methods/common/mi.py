"""Mutual-information bounds with learned critics, as FactorCL uses them.

* `ConcatCritic`: f(a, b) = MLP([a, b]) scored on all B x B pairs of a batch.
  Its first linear layer is split into one projection per side, so a pair's
  first hidden layer is proj_a(a_i) + proj_b(b_j): a broadcast add of two
  B x H tensors instead of a B x B x (d_a + d_b) concatenated input. With one
  hidden layer the pair scores go through `pair_relu_dot`: fused kernels that
  reduce over the hidden units as they go (on the CPU hand-written C,
  `pair_kernels.c`; on an accelerator compiled by inductor) where a compiler
  works, else the blockwise eager `_PairReLUDot`, the reference.
* `info_nce`: the InfoNCE lower bound from a B x B score matrix (never above log B).
* `nce_club`: the NCE-CLUB upper bound, CLUB evaluated with an InfoNCE-trained
  critic: mean positive score minus mean score over all B x B pairs.
* `NCEBound` / `CLUBBound`: a critic with its bound. A CLUB critic is not
  trained by the bound it feeds; it is trained on its own InfoNCE objective
  (`CLUBBound.critic_loss`), on a separate optimizer step.
* `condition`: an embedding with its conditioning variable beside it. Giving
  BOTH sides their condition and scoring all B x B pairs estimates
  I(A, C_a; B, C_b), not a conditional MI: for a discrete C shared by both
  sides that is I(A; B | C) + H(C), for a continuous one (an augmented view)
  it is at least I(A; B) and says nothing about the condition.
* `ConditionalNCEBound` / `ConditionalCLUBBound`: the weighted conditional bounds.
  The critic is f([a, c], b); row i's negatives are weighted toward samples
  that share c_i (`same_condition_weights`: exact for a discrete C;
  `kernel_weights`: a local approximation for a continuous one, which fails
  for a condition of many coordinates: "kernel-v4", issue 38).
* The residual conditional bounds, which pass tests/test_conditional_null.py,
  and the table of conditional estimators by name are in
  `methods.common.residual_mi`.
* `null_a` on each conditional bound: A redrawn so that it keeps its relation
  to C and loses any to B beyond it, the bound's null control.

All estimates are in nats.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from methods.common.encoders import mlp
from methods.common.pair_kernels import NATIVE

log = logging.getLogger(__name__)

PAPER_CRITIC_HIDDEN = 512
PAPER_CRITIC_DEPTH = 1  # the paper's critics; the public code builds 2 hidden layers
# Pairs are scored a block of rows at a time, each block about this many floats (4 MB): small
# enough to stay in cache, where the elementwise passes run several times faster than over
# the whole B x B x H tensor in memory.
BLOCK_FLOATS = 1 << 20


class _PairReLUDot(torch.autograd.Function):
    """out[i, j] = sum_h w_h relu(ha[i, h] + hb[j, h]), without ever holding the B x B x H tensor.

    Backward recomputes each block's activation pattern instead of storing it, and
    gets w's gradient from ha and hb's: relu(x) = 1[x > 0] x, so
    sum_ij g_ij relu(ha_i + hb_j) = sum_i ha_i * sum_j g_ij 1[.] + sum_j hb_j * sum_i g_ij 1[.].
    """

    @staticmethod
    def forward(ctx, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        rows = _block_rows(hb)
        out = ha.new_empty(ha.shape[0], hb.shape[0])
        for start in range(0, ha.shape[0], rows):
            block = (ha[start : start + rows, None, :] + hb[None]).relu_()
            torch.matmul(block, w, out=out[start : start + rows])
        ctx.save_for_backward(ha, hb, w)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ha, hb, w = ctx.saved_tensors
        grad = grad.contiguous()
        rows = _block_rows(hb)
        through_a = torch.empty_like(ha)  # sum_j g_ij 1[ha_i + hb_j > 0], before scaling by w
        through_b = torch.zeros_like(hb)
        for start in range(0, ha.shape[0], rows):
            active = (ha[start : start + rows, None, :] + hb[None]).gt_(0)
            active.mul_(grad[start : start + rows, :, None])
            torch.sum(active, dim=1, out=through_a[start : start + rows])
            through_b += active.sum(dim=0)
        grad_w = (ha * through_a).sum(0) + (hb * through_b).sum(0) if ctx.needs_input_grad[2] else None
        return through_a * w, through_b * w, grad_w


def _block_rows(hb: torch.Tensor) -> int:
    return max(1, BLOCK_FLOATS // max(1, hb.numel()))


# Fewer pairs than this (a label critic's B x K, a test's small batch) are cheap in eager form and not worth
# a fused kernel.
FUSED_MIN_PAIRS = 128 * 128


def _pair_scores(ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (torch.relu(ha[:, None, :] + hb[None]) * w).sum(-1)


def _pair_grads(ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor, grad: torch.Tensor):
    active = (ha[:, None, :] + hb[None]) > 0
    routed = torch.where(active, grad[:, :, None], 0.0)
    through_a, through_b = routed.sum(1), routed.sum(0)
    return through_a * w, through_b * w, (ha * through_a).sum(0) + (hb * through_b).sum(0)


class _CompiledPairKernels:
    """`_PairReLUDot`'s forward and backward compiled by inductor into loops over (i, j, h) that reduce as
    they go, so no B x B x H block is ever written to memory: the accelerators' fused path (Triton).

    Compiled once per process for each (B, B', H) (an epoch's last, shorter batch is a second shape);
    each compilation is logged with its time. Where no compiler works the first call fails, one line
    says so, and every later call takes the eager path.
    """

    def __init__(self) -> None:
        self.available: bool | None = None  # None: not tried yet in this process
        self.shapes: set[tuple] = set()
        self._forward = self._backward = None

    def ready(self, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor) -> bool:
        shape = (*ha.shape, hb.shape[0], str(ha.device), str(ha.dtype))
        if self.available is False or shape in self.shapes:
            return bool(self.available)
        started = time.perf_counter()
        try:
            if self._forward is None:
                self._forward = torch.compile(_pair_scores, dynamic=False)
                self._backward = torch.compile(_pair_grads, dynamic=False)
            probe = [t.detach() for t in (ha, hb, w)]
            self.backward(*probe, self.forward(*probe), True)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: use the eager form
            self.available = False
            log.warning("compiled pair critic unavailable (%s: %s); critics run in eager form",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return False
        self.available = True
        self.shapes.add(shape)
        log.info("pair critic compiled for %d x %d pairs, hidden %d, in %.1f s (once per process)",
                 ha.shape[0], hb.shape[0], ha.shape[1], time.perf_counter() - started)
        return True

    def forward(self, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self._forward(ha, hb, w)

    def backward(self, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor, grad: torch.Tensor, needs_w: bool):
        return self._backward(ha, hb, w, grad)


COMPILED = _CompiledPairKernels()


def fused_kernels(ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor):
    """The fused kernels for these operands, or None where the eager form should run."""
    if ha.shape[0] * hb.shape[0] < FUSED_MIN_PAIRS:
        return None
    kernels = NATIVE if ha.device.type == "cpu" else COMPILED
    return kernels if kernels.ready(ha, hb, w) else None


class _FusedPairReLUDot(torch.autograd.Function):
    """The same function as `_PairReLUDot`, through fused kernels (`fused_kernels`)."""

    @staticmethod
    def forward(ctx, kernels, ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.kernels = kernels
        ctx.save_for_backward(ha, hb, w)
        return kernels.forward(ha, hb, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ha, hb, w = ctx.saved_tensors
        return None, *ctx.kernels.backward(ha, hb, w, grad.contiguous(), ctx.needs_input_grad[3])


def pair_relu_dot(ha: torch.Tensor, hb: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """out[i, j] = sum_h w_h relu(ha[i, h] + hb[j, h]): fused where possible, else `_PairReLUDot`.

    At least float32, also under bfloat16 autocast: each score sums H terms, where bfloat16's
    8-bit mantissa would lose the small differences between pairs that InfoNCE ranks."""
    dtype = torch.promote_types(torch.promote_types(ha.dtype, hb.dtype), torch.promote_types(w.dtype, torch.float32))
    with torch.autocast(ha.device.type, enabled=False):
        ha, hb, w = ha.to(dtype), hb.to(dtype), w.to(dtype)
        kernels = fused_kernels(ha, hb, w) if fused else None
        if kernels is not None:
            return _FusedPairReLUDot.apply(kernels, ha, hb, w)
        return _PairReLUDot.apply(ha, hb, w)


class ConcatCritic(nn.Module):
    """f(a, b) = MLP([a, b]) with `depth` hidden layers of width `hidden`; calling it scores all pairs."""

    def __init__(self, dim_a: int, dim_b: int, hidden: int = PAPER_CRITIC_HIDDEN, depth: int = PAPER_CRITIC_DEPTH,
                 fused: bool = True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"a concat critic needs at least one hidden layer, got depth {depth}")
        self.depth = depth
        self.fused = fused  # False: the eager reference form (`_PairReLUDot`)
        self.side_a = nn.Linear(dim_a, hidden)
        # The first layer has one bias; side_a carries it, so side_b has none.
        self.side_b = nn.Linear(dim_b, hidden, bias=False)
        self.tail = nn.Sequential(nn.ReLU(), mlp([hidden] * depth + [1]))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """scores[i, j] = f(a_i, b_j) for every pair of rows of a and b."""
        ha, hb = self.side_a(a), self.side_b(b)
        if self.depth == 1:
            last = self.tail[1][0]
            return pair_relu_dot(ha, hb, last.weight[0], self.fused) + last.bias[0]
        # Deeper critics spend their time in the H x H layer over B x B rows; the plain form is as good.
        return self.tail(ha.unsqueeze(1) + hb.unsqueeze(0)).squeeze(-1)

    def paired(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """scores[i] = f(a_i, b_i): the positive pairs only."""
        return self.tail(self.side_a(a) + self.side_b(b)).squeeze(-1)


def info_nce(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE lower bound; row i's positive is column i, the other columns its negatives."""
    batch = scores.shape[0]
    return (scores.diagonal() - scores.logsumexp(dim=1)).mean() + math.log(batch)


def nce_club(scores: torch.Tensor) -> torch.Tensor:
    """NCE-CLUB upper bound: E_p(a,b)[f] - E_p(a)p(b)[f], the latter over all B x B pairs."""
    return scores.diagonal().mean() - scores.mean()


def condition(z: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """One side of a conditional critic: the embedding with its conditioning variable beside it."""
    return torch.cat([z, on.to(z.dtype)], dim=1)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Labels as critic inputs: one-hot rows (the critic's side projection learns their embedding)."""
    return F.one_hot(labels.long(), num_classes).float()


class NCEBound(nn.Module):
    """I_NCE(A; B): the critic maximizes the bound itself, jointly with the encoders."""

    def __init__(self, dim_a: int, dim_b: int, hidden: int = PAPER_CRITIC_HIDDEN, depth: int = PAPER_CRITIC_DEPTH):
        super().__init__()
        self.critic = ConcatCritic(dim_a, dim_b, hidden, depth)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return info_nce(self.critic(a, b))


class LabelNCEBound(nn.Module):
    """I_NCE(A; Y) for a class label Y.

    f(a_i, y_j) depends on j only through y_j's class, so the B x B scores are
    the B x K scores against each class, gathered by label: exact, and O(B K).
    """

    def __init__(self, dim_a: int, num_classes: int, hidden: int = PAPER_CRITIC_HIDDEN,
                 depth: int = PAPER_CRITIC_DEPTH):
        super().__init__()
        self.num_classes = num_classes
        self.critic = ConcatCritic(dim_a, num_classes, hidden, depth)

    def forward(self, a: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = torch.eye(self.num_classes, device=a.device, dtype=a.dtype)
        by_class = self.critic(a, classes)  # B x K
        return info_nce(by_class[:, labels.long()])


class CLUBBound(nn.Module):
    """I_CLUB(A; B) with a critic of its own, trained apart on InfoNCE.

    `forward` holds the critic fixed: gradients reach the embeddings but not the
    critic's weights, which the main objective (it minimizes this bound) would
    otherwise flatten to cheat it.
    """

    def __init__(self, dim_a: int, dim_b: int, hidden: int = PAPER_CRITIC_HIDDEN, depth: int = PAPER_CRITIC_DEPTH):
        super().__init__()
        self.critic = ConcatCritic(dim_a, dim_b, hidden, depth)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fixed = {name: p.detach() for name, p in self.critic.named_parameters()}
        return nce_club(functional_call(self.critic, fixed, (a, b)))

    def critic_loss(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The critic's own objective: maximize InfoNCE on embeddings it cannot move."""
        return -info_nce(self.critic(a.detach(), b.detach()))


# -- conditional bounds -------------------------------------------------------------------------
# I(A; B | C) needs, for each anchor (a_i, c_i), negatives b drawn from p(b | c_i), not from p(b).
# The B x B score matrix stays as it is; a row-stochastic matrix `weights` says how much each
# column j stands for a draw from p(b | c_i). Uniform rows (weights None) give the unconditional
# bounds; rows uniform over the samples sharing a discrete condition give the exact conditional
# ones; rows from a kernel on a continuous condition give a local approximation.


def conditional_info_nce(scores: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i [f_ii - log sum_j w_ij exp f_ij]: InfoNCE whose negatives for row i follow p(b | c_i).

    With uniform weights this is `info_nce`; it never exceeds mean_i -log w_ii.
    """
    if weights is None:
        return info_nce(scores)
    # A zero weight must exclude its pair however large its score: -inf, not the log of a tiny number.
    log_weights = torch.where(weights > 0, weights.log(), float("-inf"))
    return (scores.diagonal() - (scores + log_weights).logsumexp(dim=1)).mean()


def conditional_nce_club(scores: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i [f_ii - sum_j w_ij f_ij]: NCE-CLUB against the product p(a | c) p(b | c)."""
    if weights is None:
        return nce_club(scores)
    return (scores.diagonal() - (weights * scores).sum(dim=1)).mean()


def same_condition_weights(labels: torch.Tensor) -> torch.Tensor:
    """Row i uniform over the samples whose discrete condition equals sample i's (itself included): exact."""
    same = (labels[:, None] == labels[None, :]).float()
    return same / same.sum(dim=1, keepdim=True)


def kernel_weights(conditions: torch.Tensor, bandwidth: torch.Tensor | float) -> torch.Tensor:
    """Row i: a Gaussian kernel in the condition's space around c_i, normalized over the batch.

    Samples whose conditions lie within about `bandwidth` of c_i stand for draws from p(b | c_i).
    Never differentiated: which samples share a condition is a sampling scheme, not something
    the encoders may optimize.
    """
    c = conditions.detach()
    distances = torch.cdist(c, c).square()
    return torch.softmax(-distances / (2 * torch.as_tensor(bandwidth, dtype=c.dtype) ** 2), dim=1)


def self_weights(weights: torch.Tensor) -> torch.Tensor:
    """w_ii: how much each anchor's own sample stands for a draw given its condition."""
    return weights.diagonal()


def kernel_stats(weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a weighting leaves a conditional InfoNCE to measure, as tensors (no host read).

    * self_weight: mean w_ii.
    * neighbours: 1 / mean w_ii, the effective number of samples per condition (the batch size for
      uniform weights, 1 for one-hot ones). Defined on the mean, not per row, so a few isolated rows
      cannot hide behind many crowded ones in a mean of 1 / w_ii.
    * ceiling: mean -log w_ii, the most any critic's conditional InfoNCE can read (`conditional_info_nce`).
    """
    own = self_weights(weights.detach())
    mean = own.mean()
    return {"self_weight": mean, "neighbours": 1 / mean, "ceiling": -own.log().mean()}


def _effective_neighbours(squared: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
    # w_ii = exp(0) / sum_j exp(-d_ij^2 / 2h^2): the diagonal distance is 0, the row's largest logit, so this
    # is what `kernel_weights`' softmax computes for the diagonal.
    return 1 / (1 / torch.exp(-squared / (2 * bandwidth**2)).sum(dim=1)).mean()


BISECTION_STEPS = 40  # on log h over at most ~30 nats of range: a relative precision of 30 / 2^40, far below float32's


def neighbour_bandwidth(conditions: torch.Tensor, min_neighbours: float) -> torch.Tensor:
    """The smallest Gaussian-kernel bandwidth whose weights give at least `min_neighbours` effective
    neighbours (`kernel_stats`) in this batch, found by bisection on log h; at most half the batch.

    Every w_ii falls as h grows (each other sample's kernel term grows), so the effective number of
    neighbours rises monotonically from 1 (h -> 0) to the batch size (h -> infinity). Runs on the device
    with no host read: a fixed number of halvings, each a where().
    """
    c = conditions.detach().float()
    squared = torch.cdist(c, c).square()
    target = min(float(min_neighbours), c.shape[0] / 2)
    # At h = 10 x the largest distance every kernel term is at least exp(-1/200): about the whole batch counts.
    spread = squared.max().sqrt().clamp_min(1e-6)
    lo, hi = torch.log(spread * 1e-4), torch.log(spread * 10)
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        enough = _effective_neighbours(squared, mid.exp()) >= target
        hi, lo = torch.where(enough, mid, hi), torch.where(enough, lo, mid)
    return hi.exp()  # hi always meets the target


def condition_bandwidth(conditions: torch.Tensor, moved: torch.Tensor, min_neighbours: float) -> torch.Tensor:
    """FactorCL-SSL's rule: the median distance an augmentation moves a sample's own condition (samples
    whose conditions lie that close are as alike as two views of one sample), but never so narrow that
    the batch keeps fewer than `min_neighbours` effective neighbours per condition."""
    return torch.maximum(moved.detach().median().clamp_min(1e-6), neighbour_bandwidth(conditions, min_neighbours))


class ConditionalNCEBound(nn.Module):
    """I_NCE(A; B | C): the critic f([a, c], b) sees the anchor's condition; negatives follow `weights`."""

    uses_weights = True

    def __init__(self, dim_a: int, dim_b: int, dim_c: int = 0, hidden: int = PAPER_CRITIC_HIDDEN,
                 depth: int = PAPER_CRITIC_DEPTH):
        super().__init__()
        self.critic = ConcatCritic(dim_a + dim_c, dim_b, hidden, depth)

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        return conditional_info_nce(self.critic(_beside(a, c), b), weights)

    def null_a(self, a: torch.Tensor, c: torch.Tensor | None, weights: torch.Tensor | None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """A shuffled within its condition's neighbourhood (`neighbourhood_shuffle`): the null control."""
        return a[neighbourhood_shuffle(_or_uniform(weights, a), generator)]


class ConditionalCLUBBound(nn.Module):
    """I_CLUB(A; B | C) with a critic f([a, c], b) of its own, trained apart on the same conditional InfoNCE.

    `forward` holds the critic fixed and returns the bound and, detached, the critic's own
    InfoNCE on the same scores: the bound is an upper bound only while that InfoNCE is well
    above zero, so callers should log it.
    """

    uses_weights = True

    def __init__(self, dim_a: int, dim_b: int, dim_c: int = 0, hidden: int = PAPER_CRITIC_HIDDEN,
                 depth: int = PAPER_CRITIC_DEPTH):
        super().__init__()
        self.critic = ConcatCritic(dim_a + dim_c, dim_b, hidden, depth)

    def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None,
                weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        fixed = {name: p.detach() for name, p in self.critic.named_parameters()}
        scores = functional_call(self.critic, fixed, (_beside(a, c), b))
        return conditional_nce_club(scores, weights), conditional_info_nce(scores.detach(), weights)

    def critic_nce(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
        """The critic's own objective (maximize it), on embeddings it cannot move."""
        side_a = _beside(a, c).detach()
        return conditional_info_nce(self.critic(side_a, b.detach()), weights)

    null_a = ConditionalNCEBound.null_a


def _beside(a: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    return a if c is None else condition(a, c)


def _or_uniform(weights: torch.Tensor | None, a: torch.Tensor) -> torch.Tensor:
    return torch.ones(len(a), len(a), device=a.device) if weights is None else weights


def neighbourhood_shuffle(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each row i, another row drawn from i's neighbourhood (row i of `weights`, itself left out unless
    it is its own only neighbour): A shuffled this way keeps its relation to the condition and loses any to
    B beyond it, the null control of a conditional term."""
    others = weights.detach().clone().fill_diagonal_(0)
    alone = others.sum(dim=1) <= 0
    others[alone] = torch.eye(len(weights), dtype=others.dtype, device=others.device)[alone]
    return torch.multinomial(others.float().cpu(), 1, generator=generator).squeeze(1).to(weights.device)
