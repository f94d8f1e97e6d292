"""methods/common/mi.py's exact properties, from the definitions: the pair kernels against the plain B x B x H form,
the compiled path's bookkeeping (with a stand-in compiler), the critics and bounds against their formulas, and
the kernel weights, bandwidths and null draws against what their docstrings promise. Nothing is trained, so the
file runs in seconds; mutation testing runs it once per mutant (tests/test_estimators.py holds the statistical
tests against Gaussians, tests/test_loss_definitions.py the bounds by hand).
"""

import logging
import math
import time
import warnings

import pytest
import torch

from methods.common import mi
from methods.common.mi import (
    PAPER_CRITIC_DEPTH,
    PAPER_CRITIC_HIDDEN,
    CLUBBound,
    ConcatCritic,
    ConditionalCLUBBound,
    ConditionalNCEBound,
    LabelNCEBound,
    NCEBound,
    condition,
    condition_bandwidth,
    conditional_info_nce,
    conditional_nce_club,
    info_nce,
    kernel_stats,
    kernel_weights,
    nce_club,
    neighbour_bandwidth,
    neighbourhood_shuffle,
    one_hot,
    same_condition_weights,
)

# Float64 values computed twice by the same terms summed in another order: a few rounding errors of O(10).
TOL = dict(rtol=1e-12, atol=1e-12)


def f64(*shape, seed=0, integers=False):
    g = torch.Generator().manual_seed(seed)
    if integers:  # small integers: many pairs sum to exactly 0, where relu's derivative convention shows
        return torch.randint(-2, 3, shape, generator=g).double()
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def plain(ha, hb, w):
    """sum_h w_h relu(ha_i,h + hb_j,h) over the whole B x B' x H tensor; autograd's relu has derivative 0 at 0."""
    return (torch.relu(ha[:, None, :] + hb[None]) * w).sum(-1)


def outputs_and_gradients(form, ha, hb, w, weighting):
    ha, hb, w = (t.clone().requires_grad_() for t in (ha, hb, w))
    out = form(ha, hb, w)
    (out * weighting).sum().backward()
    return out, ha.grad, hb.grad, w.grad


# -- the pair kernels ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("budget", [1, 14, 1 << 20])  # one row a block; 2 rows of 7 x 1 (an uneven last block); all
@pytest.mark.parametrize("integers", [False, True])
def test_the_blockwise_kernel_equals_the_plain_form_in_value_and_every_gradient(monkeypatch, budget, integers):
    monkeypatch.setattr(mi, "BLOCK_FLOATS", budget)
    ha, hb, w = f64(5, 1, integers=integers), f64(7, 1, seed=1, integers=integers), f64(1, seed=2)
    if budget != 14:
        ha, hb, w = f64(9, 6, integers=integers), f64(7, 6, seed=1, integers=integers), f64(6, seed=2)
    weighting = f64(len(ha), len(hb), seed=3)
    with warnings.catch_warnings():
        # Each block writes its own rows of the output: an out= of the wrong shape would be resized with a
        # warning (deprecated; later releases will not resize it at all).
        warnings.simplefilter("error")
        blockwise = outputs_and_gradients(mi._PairReLUDot.apply, ha, hb, w, weighting)
    for got, want in zip(blockwise, outputs_and_gradients(plain, ha, hb, w, weighting)):
        torch.testing.assert_close(got, want, **TOL)


def test_the_blockwise_kernel_skips_the_weights_gradient_when_none_is_wanted():
    ha, hb, w = f64(4, 3).requires_grad_(), f64(5, 3, seed=1), f64(3, seed=2)
    mi._PairReLUDot.apply(ha, hb, w).sum().backward()
    torch.testing.assert_close(ha.grad, torch.autograd.grad(plain(ha, hb, w).sum(), ha)[0], **TOL)


@pytest.mark.parametrize("rows, width", [(1, 1), (3, 5), (1000, 3000)])
def test_a_block_holds_as_many_rows_as_fit_the_budget_and_never_none(rows, width):
    hb = torch.empty(rows, width)
    fit = mi._block_rows(hb)
    assert fit >= 1
    assert fit == 1 or fit * hb.numel() <= mi.BLOCK_FLOATS < (fit + 1) * hb.numel()


@pytest.mark.parametrize("integers", [False, True])
def test_the_compiled_kernels_eager_sources_are_the_plain_form_and_its_gradient(integers):
    ha, hb, w = f64(6, 4, integers=integers), f64(5, 4, seed=1, integers=integers), f64(4, seed=2)
    grad = f64(6, 5, seed=3)
    torch.testing.assert_close(mi._pair_scores(ha, hb, w), plain(ha, hb, w), **TOL)
    _, *want = outputs_and_gradients(plain, ha, hb, w, grad)
    for got, expected in zip(mi._pair_grads(ha, hb, w, grad), want):
        torch.testing.assert_close(got, expected, **TOL)


class StandIn:
    """torch.compile's stand-in: records each call and returns the function itself (or raises)."""

    def __init__(self, error: Exception | None = None):
        self.calls, self.error = [], error

    def __call__(self, fn, **kwargs):
        self.calls.append((fn, kwargs))
        if self.error is not None:
            raise self.error
        return fn


def test_the_compiled_kernels_compile_once_per_shape_with_static_shapes_and_say_so(monkeypatch, caplog):
    compiler = StandIn()
    monkeypatch.setattr(torch, "compile", compiler)
    kernels = mi._CompiledPairKernels()
    assert kernels.available is None and kernels.shapes == set()
    ha, hb, w = f64(6, 4), f64(5, 4, seed=1), f64(4, seed=2)
    with caplog.at_level(logging.INFO, logger="methods.common"):
        started = time.perf_counter()
        assert kernels.ready(ha, hb, w) is True
        took = time.perf_counter() - started
        assert kernels.ready(ha, hb, w) is True  # the same shape: nothing new to compile or say
        assert kernels.ready(ha.float(), hb.float(), w.float()) is True  # another dtype is another shape
    assert compiler.calls == [(mi._pair_scores, {"dynamic": False}), (mi._pair_grads, {"dynamic": False})]
    assert kernels.available is True
    assert kernels.shapes == {(6, 4, 5, "cpu", "torch.float64"), (6, 4, 5, "cpu", "torch.float32")}
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO"]
    first = caplog.records[0]
    assert first.getMessage().startswith("pair critic compiled for 6 x 5 pairs, hidden 4, in ")
    assert 0 <= first.args[-1] <= took
    grad = f64(6, 5, seed=3)
    torch.testing.assert_close(kernels.forward(ha, hb, w), plain(ha, hb, w), **TOL)
    for got, want in zip(kernels.backward(ha, hb, w, grad, True), mi._pair_grads(ha, hb, w, grad)):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("message, shown", [("no inductor\nsecond line", "RuntimeError: no inductor)"),
                                            ("", "RuntimeError: )")])
def test_a_failed_compilation_says_its_first_line_once_and_is_never_tried_again(monkeypatch, caplog, message, shown):
    compiler = StandIn(RuntimeError(message))
    monkeypatch.setattr(torch, "compile", compiler)
    kernels = mi._CompiledPairKernels()
    operands = (f64(6, 4), f64(5, 4, seed=1), f64(4, seed=2))
    with caplog.at_level(logging.INFO, logger="methods.common"):
        assert kernels.ready(*operands) is False
        assert kernels.ready(*operands) is False
    assert len(compiler.calls) == 1 and kernels.available is False and kernels.shapes == set()
    assert [r.getMessage() for r in caplog.records] == [
        f"compiled pair critic unavailable ({shown}; critics run in eager form"]


class Recording:
    """Fused kernels made of the eager sources, recording what they are asked."""

    def __init__(self, ready=True):
        self.is_ready, self.asked, self.needs_w = ready, [], []

    def ready(self, ha, hb, w):
        self.asked.append((ha.shape, hb.shape, w.shape))  # the operands they would run on, w's too
        return self.is_ready

    def forward(self, ha, hb, w):
        return mi._pair_scores(ha, hb, w)

    def backward(self, ha, hb, w, grad, needs_w):
        self.needs_w.append(needs_w)
        return mi._pair_grads(ha, hb, w, grad)


@pytest.fixture
def recording(monkeypatch):
    native, compiled = Recording(), Recording()
    monkeypatch.setattr(mi, "NATIVE", native)
    monkeypatch.setattr(mi, "COMPILED", compiled)
    return native, compiled


def test_fused_kernels_start_at_the_size_threshold_on_the_machines_own_kind(recording, monkeypatch):
    native, compiled = recording
    monkeypatch.setattr(mi, "FUSED_MIN_PAIRS", 20)
    w = torch.zeros(3)
    assert mi.fused_kernels(torch.zeros(4, 3), torch.zeros(4, 3), w) is None  # 16 pairs: below
    assert native.asked == []
    assert mi.fused_kernels(torch.zeros(4, 3), torch.zeros(5, 3), w) is native  # 20 pairs: at the threshold
    on_meta = torch.zeros(4, 3, device="meta")
    assert mi.fused_kernels(on_meta, torch.zeros(5, 3, device="meta"), w.to("meta")) is compiled
    compiled.is_ready = False
    assert mi.fused_kernels(on_meta, torch.zeros(5, 3, device="meta"), w.to("meta")) is None


@pytest.mark.parametrize("w_learns", [True, False])
def test_the_fused_path_has_the_plain_forms_value_and_gradients(recording, monkeypatch, w_learns):
    native, _ = recording
    monkeypatch.setattr(mi, "FUSED_MIN_PAIRS", 1)
    ha, hb, w, weighting = f64(6, 4), f64(5, 4, seed=1), f64(4, seed=2), f64(6, 5, seed=3)
    ha, hb, w = ha.requires_grad_(), hb.requires_grad_(), w.requires_grad_(w_learns)
    out = mi.pair_relu_dot(ha, hb, w)
    (out * weighting.t().contiguous().t()).sum().backward()  # a non-contiguous gradient arrives contiguous
    want = outputs_and_gradients(plain, ha.detach(), hb.detach(), w.detach(), weighting)
    assert native.needs_w == [w_learns]
    for got, expected in zip((out, ha.grad, hb.grad), want):
        torch.testing.assert_close(got, expected, **TOL)
    if w_learns:
        torch.testing.assert_close(w.grad, want[3], **TOL)


def test_pair_scores_take_the_eager_form_when_fused_is_off_or_too_few_pairs(recording, monkeypatch):
    native, _ = recording
    ha, hb, w = f64(6, 4), f64(5, 4, seed=1), f64(4, seed=2)
    torch.testing.assert_close(mi.pair_relu_dot(ha, hb, w), plain(ha, hb, w), **TOL)  # 30 pairs, under 128^2
    monkeypatch.setattr(mi, "FUSED_MIN_PAIRS", 1)
    torch.testing.assert_close(mi.pair_relu_dot(ha, hb, w, fused=False), plain(ha, hb, w), **TOL)
    assert native.asked == [] and native.needs_w == []


def test_pair_scores_are_at_least_float32_even_under_bfloat16_autocast():
    ha, hb, w = (t.float() for t in (f64(6, 4), f64(5, 4, seed=1), f64(4, seed=2)))
    want = plain(ha.bfloat16().float(), hb.bfloat16().float(), w)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = mi.pair_relu_dot(ha.bfloat16(), hb.bfloat16(), w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # float32 sums of 4 terms of O(1)
    assert mi.pair_relu_dot(ha.bfloat16(), hb.bfloat16(), w.bfloat16()).dtype == torch.float32
    assert mi.pair_relu_dot(ha.double(), hb.double(), w.double()).dtype == torch.float64


def test_every_operand_is_promoted_to_the_common_dtype_before_any_sum(recording, monkeypatch):
    """A float32 side in a float64 critic: scores and every gradient are float64 sums, a float32 gradient
    rounded once at the end (exactly, for a float64 sum whose rounding is not near a float32 tie)."""
    ha, hb, w, weighting = f64(6, 4), f64(5, 4, seed=1).float(), f64(4, seed=2), f64(6, 5, seed=3)
    want = outputs_and_gradients(plain, ha, hb.double(), w, weighting)
    for fused_from in (10**9, 1):  # the blockwise form, then the fused one
        monkeypatch.setattr(mi, "FUSED_MIN_PAIRS", fused_from)
        got = outputs_and_gradients(mi.pair_relu_dot, ha, hb, w, weighting)
        assert got[2].dtype == torch.float32
        torch.testing.assert_close(got[0], want[0], **TOL)
        torch.testing.assert_close(got[2], want[2].float(), rtol=0, atol=0)


# -- the critics -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("fused", [True, False])
def test_the_critic_scores_every_pair_as_the_mlp_on_the_concatenated_pair(depth, fused, recording, monkeypatch):
    monkeypatch.setattr(mi, "FUSED_MIN_PAIRS", 1)  # the fused path too, with the recording kernels
    torch.manual_seed(0)
    critic = ConcatCritic(3, 4, hidden=16, depth=depth, fused=fused).double()
    assert critic.side_b.bias is None and critic.side_a.out_features == 16
    assert len([m for m in critic.modules() if isinstance(m, torch.nn.Linear)]) == depth + 2
    a, b = f64(5, 3), f64(6, 4, seed=1)
    first = torch.nn.Linear(7, 16).double()
    with torch.no_grad():
        first.weight.copy_(torch.cat([critic.side_a.weight, critic.side_b.weight], dim=1))
        first.bias.copy_(critic.side_a.bias)
    pairs = torch.cat([a[:, None].expand(5, 6, 3), b[None].expand(5, 6, 4)], dim=-1)
    naive = critic.tail(first(pairs)).squeeze(-1)
    torch.testing.assert_close(critic(a, b), naive, **TOL)
    torch.testing.assert_close(critic.paired(a, b[:5]), naive.diagonal(), **TOL)
    assert recording[0].asked == ([((5, 16), (6, 16), (16,))] if depth == 1 and fused else [])


def test_a_critic_needs_a_hidden_layer_and_defaults_to_the_papers():
    with pytest.raises(ValueError, match="at least one hidden layer, got depth 0"):
        ConcatCritic(2, 2, depth=0)
    critic = ConcatCritic(2, 3)
    assert critic.depth == PAPER_CRITIC_DEPTH == 1 and critic.fused
    assert critic.side_a.out_features == PAPER_CRITIC_HIDDEN
    for bound in (NCEBound(2, 3), CLUBBound(2, 3), LabelNCEBound(2, 3), ConditionalNCEBound(2, 3),
                  ConditionalCLUBBound(2, 3)):
        assert bound.critic.side_a.out_features == PAPER_CRITIC_HIDDEN and bound.critic.depth == PAPER_CRITIC_DEPTH
        assert (bound.critic.side_a.in_features, bound.critic.side_b.in_features) == (2, 3)


@pytest.mark.parametrize("form", [NCEBound, CLUBBound, LabelNCEBound, ConditionalNCEBound, ConditionalCLUBBound])
def test_each_bound_builds_the_critic_it_is_given(form):
    bound = form(2, 3, hidden=8, depth=2)
    assert (bound.critic.side_a.in_features, bound.critic.side_b.in_features) == (2, 3)
    assert bound.critic.side_a.out_features == 8 and bound.critic.depth == 2
    assert form(2, 3, 4, hidden=8).critic.side_a.in_features == 6 if "Conditional" in form.__name__ else True


# -- the bounds --------------------------------------------------------------------------------------------------

def test_info_nce_is_log_batch_at_a_certain_critic_zero_at_a_blind_one_and_never_above_log_batch():
    assert info_nce(torch.eye(5, dtype=torch.float64) * 1e4).item() == pytest.approx(math.log(5), rel=1e-12)
    assert info_nce(torch.ones(6, 6, dtype=torch.float64)).item() == pytest.approx(0.0, abs=1e-12)
    for seed in range(5):
        assert info_nce(10 * f64(7, 7, seed=seed)) <= math.log(7)


def test_the_nce_bound_is_info_nce_of_its_critic_and_trains_it():
    torch.manual_seed(0)
    bound = NCEBound(3, 4, hidden=8).double()
    a, b = f64(6, 3), f64(6, 4, seed=1)
    value = bound(a, b)
    torch.testing.assert_close(value, info_nce(bound.critic(a, b)), **TOL)
    value.backward()
    assert all(p.grad is not None for p in bound.parameters())


def test_the_club_bound_holds_its_critic_fixed_and_its_critic_trains_apart():
    torch.manual_seed(0)
    bound = CLUBBound(3, 4, hidden=8).double()
    a, b = f64(6, 3).requires_grad_(), f64(6, 4, seed=1).requires_grad_()
    club = bound(a, b)
    torch.testing.assert_close(club, nce_club(bound.critic(a, b)), **TOL)
    club.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    assert all(p.grad is None for p in bound.parameters())
    a.grad = b.grad = None
    loss = bound.critic_loss(a, b)
    torch.testing.assert_close(loss, -info_nce(bound.critic(a, b)), **TOL)
    loss.backward()
    assert a.grad is None and b.grad is None and all(p.grad is not None for p in bound.parameters())


def test_the_label_bound_scores_each_sample_against_its_own_class_among_the_batchs_labels():
    torch.manual_seed(0)
    bound = LabelNCEBound(4, num_classes=3, hidden=8).double()
    z, labels = f64(10, 4), torch.tensor([0, 2, 2, 1, 0, 0, 2, 1, 1, 0])
    want = info_nce(bound.critic(z, one_hot(labels, 3).double()))
    torch.testing.assert_close(bound(z, labels.float()), want, **TOL)  # labels of any numeric dtype


def test_labels_become_float_one_hot_rows_and_a_condition_sits_beside_its_embedding():
    rows = one_hot(torch.tensor([2.0, 0.0]), 3)
    assert rows.dtype == torch.float32 and rows.tolist() == [[0, 0, 1], [1, 0, 0]]
    assert one_hot(torch.tensor([0, 1]), 3).tolist() == [[1, 0, 0], [0, 1, 0]]  # a class the batch lacks
    z = f64(2, 2)
    beside = condition(z, torch.tensor([[1, 0], [0, 1]]))
    assert beside.dtype == torch.float64 and torch.equal(beside, torch.cat([z, torch.eye(2, dtype=z.dtype)], 1))
    assert condition(z.float(), torch.eye(2, dtype=torch.float64)).dtype == torch.float32  # the embedding's dtype


def test_the_conditional_bounds_exclude_zero_weight_pairs_and_reduce_to_the_plain_ones_without_weights():
    scores = 5 * f64(6, 6)
    torch.testing.assert_close(conditional_info_nce(scores), info_nce(scores), rtol=0, atol=0)
    torch.testing.assert_close(conditional_nce_club(scores), nce_club(scores), rtol=0, atol=0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    weights = same_condition_weights(labels).double()
    huge = scores.clone()
    huge[weights == 0] = 1e30  # a pair outside the condition counts for nothing, however large its score
    torch.testing.assert_close(conditional_info_nce(huge, weights), conditional_info_nce(scores, weights), **TOL)
    # With a row's weights on itself alone its term is f_ii - (f_ii + log 1) = 0: the ceiling -log w_ii is 0.
    assert conditional_info_nce(scores, torch.eye(6, dtype=torch.float64)).item() == pytest.approx(0, abs=1e-12)


def test_same_condition_weights_are_uniform_over_each_rows_class():
    weights = same_condition_weights(torch.tensor([3, 1, 3, 3]))
    third = 1 / 3
    want = torch.tensor([[third, 0, third, third], [0, 1, 0, 0], [third, 0, third, third], [third, 0, third, third]])
    torch.testing.assert_close(weights, want)


# -- kernel weights and bandwidths -------------------------------------------------------------------------------

def test_kernel_weights_fall_as_a_gaussian_in_the_squared_distance_and_carry_no_gradient():
    c = f64(8, 3).requires_grad_()
    for bandwidth in (0.7, torch.tensor(0.7, dtype=torch.float64)):
        weights = kernel_weights(c, bandwidth)
        assert not weights.requires_grad
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(8, dtype=torch.float64), **TOL)
        squared = torch.cdist(c.detach(), c.detach()).square()
        log_ratio = weights.log() - weights.diagonal().log()[:, None]  # log w_ij / w_ii = -d_ij^2 / 2h^2
        torch.testing.assert_close(log_ratio, -squared / (2 * 0.7**2), rtol=1e-10, atol=1e-10)


def test_kernel_stats_read_uniform_weights_as_the_whole_batch_and_one_hot_ones_as_one():
    uniform = kernel_stats(torch.full((8, 8), 1 / 8))
    assert uniform["self_weight"].item() == pytest.approx(1 / 8)
    assert uniform["neighbours"].item() == pytest.approx(8)
    assert uniform["ceiling"].item() == pytest.approx(math.log(8))
    alone = kernel_stats(torch.eye(4))
    assert (alone["self_weight"].item(), alone["neighbours"].item(), alone["ceiling"].item()) == (1, 1, 0)
    # neighbours is 1 / mean w_ii, not the mean of 1 / w_ii: rows of w_ii 1/2 and 1/8 give 1 / (5/16), not 5.
    mixed = kernel_stats(torch.tensor([[0.5, 0.5], [0.875, 0.125]]).requires_grad_())
    assert mixed["neighbours"].item() == pytest.approx(16 / 5)
    assert mixed["ceiling"].item() == pytest.approx((math.log(2) + math.log(8)) / 2)
    assert not any(v.requires_grad for v in mixed.values())


def test_the_neighbour_count_the_bisection_uses_is_kernel_stats_own():
    c = f64(10, 3)
    for h in (0.3, 1.0, 3.0):
        squared = torch.cdist(c, c).square()
        torch.testing.assert_close(mi._effective_neighbours(squared, torch.tensor(h, dtype=torch.float64)),
                                   kernel_stats(kernel_weights(c, h))["neighbours"], **TOL)


def neighbours_at(c, h):
    return kernel_stats(kernel_weights(c.double(), float(h)))["neighbours"].item()


# Bisection in float32: log h is found to about float32's eps times |log h|; a 1e-3 step in h is far above that.
STEP = 1e-3


@pytest.mark.parametrize("target, scale", [(2.5, 1.0), (5.0, 0.01), (100.0, 1.0)])  # the last is capped at B / 2
def test_the_neighbour_bandwidth_is_the_smallest_that_keeps_the_target(target, scale):
    c = f64(16, 3) * scale
    c.requires_grad_()
    h = neighbour_bandwidth(c, target)
    assert h.dtype == torch.float32 and not h.requires_grad
    want = min(target, 16 / 2)
    assert neighbours_at(c.detach(), h) >= want * (1 - 1e-5)  # float32's own rounding of the count
    assert neighbours_at(c.detach(), h * (1 - STEP)) < want


@pytest.mark.parametrize("scale", [1e-4, 1e3])
def test_the_neighbour_bandwidth_scales_with_the_conditions(scale):
    # The weights depend on c and h only through |c_i - c_j| / h: scaling both leaves them, and so the answer.
    c = f64(16, 3).float()
    torch.testing.assert_close(neighbour_bandwidth(c * scale, 3.0), neighbour_bandwidth(c, 3.0) * scale,
                               rtol=1e-5, atol=0)  # float32 distances, and a bisection to float32's resolution


def test_the_neighbour_bandwidth_of_low_precision_conditions_is_found_in_float32():
    c = f64(16, 3).bfloat16()
    torch.testing.assert_close(neighbour_bandwidth(c, 3.0), neighbour_bandwidth(c.float(), 3.0), rtol=1e-6, atol=0)


def test_the_condition_bandwidth_is_the_median_move_unless_that_leaves_too_few_neighbours():
    c = f64(16, 3)
    floor = neighbour_bandwidth(c, 3.0)
    moves = torch.tensor([0.0, 1.0, 100.0]) * floor * 10  # median 10 x the floor; the mean would be 337
    assert condition_bandwidth(c, moves.requires_grad_(), 3.0).item() == pytest.approx(10 * floor.item())
    assert condition_bandwidth(c, moves.detach() / 1000, 3.0).item() == pytest.approx(floor.item())
    assert not condition_bandwidth(c, moves, 3.0).requires_grad


# -- the conditional bounds and their null draws -----------------------------------------------------------------

def test_the_conditional_nce_bound_scores_the_anchor_beside_its_condition_with_the_weights():
    torch.manual_seed(0)
    bound = ConditionalNCEBound(2, 3, 2, hidden=8).double()
    a, b, c = f64(6, 2), f64(6, 3, seed=1), f64(6, 2, seed=2)
    weights = same_condition_weights(torch.tensor([0, 0, 1, 1, 1, 2])).double()
    torch.testing.assert_close(bound(a, b, c, weights),
                               conditional_info_nce(bound.critic(condition(a, c), b), weights), **TOL)
    plain_bound = ConditionalNCEBound(2, 3, hidden=8).double()
    torch.testing.assert_close(plain_bound(a, b), info_nce(plain_bound.critic(a, b)), **TOL)


def test_the_conditional_club_bound_holds_its_critic_fixed_and_reports_its_info_nce_detached():
    torch.manual_seed(0)
    bound = ConditionalCLUBBound(2, 3, 2, hidden=8).double()
    a, b, c = f64(6, 2).requires_grad_(), f64(6, 3, seed=1).requires_grad_(), f64(6, 2, seed=2)
    weights = same_condition_weights(torch.tensor([0, 0, 1, 1, 1, 2])).double()
    club, nce = bound(a, b, c, weights)
    scores = bound.critic(condition(a, c), b)
    torch.testing.assert_close(club, conditional_nce_club(scores, weights), **TOL)
    torch.testing.assert_close(nce, conditional_info_nce(scores, weights), **TOL)
    assert not nce.requires_grad
    club.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    assert all(p.grad is None for p in bound.parameters())
    a.grad = b.grad = None
    own = bound.critic_nce(a, b, c, weights)
    torch.testing.assert_close(own, conditional_info_nce(scores, weights), **TOL)
    own.backward()
    assert a.grad is None and b.grad is None and all(p.grad is not None for p in bound.parameters())
    assert bound.uses_weights and ConditionalNCEBound.uses_weights


def test_uniform_weights_stand_beside_the_embeddings():
    a = torch.zeros(3, 2, device="meta")  # no data, but a device of its own: a CPU tensor here would be a bug
    uniform = mi._or_uniform(None, a)
    assert uniform.device == a.device and uniform.shape == (3, 3)
    weights = torch.rand(3, 3)
    assert mi._or_uniform(weights, a) is weights


def test_a_neighbourhood_shuffle_draws_each_row_from_its_neighbours_never_itself_unless_alone():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    weights = same_condition_weights(labels)
    for seed in range(20):
        drawn = neighbourhood_shuffle(weights, torch.Generator().manual_seed(seed))
        assert torch.equal(labels[drawn], labels)  # the same condition
        assert (drawn[:5] != torch.arange(5)).all() and drawn[5] == 5  # row 5 is its condition's only sample
    first = neighbourhood_shuffle(weights, torch.Generator().manual_seed(1))
    torch.manual_seed(9)  # the global stream must not matter
    assert torch.equal(first, neighbourhood_shuffle(weights, torch.Generator().manual_seed(1)))
    assert weights.diagonal().tolist() == pytest.approx([0.5, 0.5, 1 / 3, 1 / 3, 1 / 3, 1])  # left as it was


def test_a_conditional_bounds_null_draw_shuffles_a_within_its_neighbourhood_or_the_whole_batch():
    a, c = f64(6, 2), f64(6, 2, seed=1)
    weights = same_condition_weights(torch.tensor([0, 0, 1, 1, 1, 2]))
    for form in (ConditionalNCEBound, ConditionalCLUBBound):
        bound = form(2, 2, 2, hidden=8)
        drawn = bound.null_a(a, c, weights, torch.Generator().manual_seed(3))
        torch.testing.assert_close(drawn, a[neighbourhood_shuffle(weights, torch.Generator().manual_seed(3))],
                                   rtol=0, atol=0)
        anywhere = bound.null_a(a, None, None, torch.Generator().manual_seed(3))  # no weights: all rows neighbours
        torch.testing.assert_close(anywhere, a[neighbourhood_shuffle(torch.ones(6, 6),
                                                                     torch.Generator().manual_seed(3))], rtol=0, atol=0)
