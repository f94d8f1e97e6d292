"""The residual conditional bounds' parts, from their definitions: r = (x - g(c)) / sd, g = linear + MLP correction,
fit by least squares apart from the bound; nothing is trained, so the file runs in seconds (mutation testing
runs it once per mutant of methods/common/residual_mi.py; tests/test_conditional_null.py trains the estimators).
"""

import math

import pytest
import torch

from methods.common.mi import (
    PAPER_CRITIC_DEPTH,
    PAPER_CRITIC_HIDDEN,
    ConditionalCLUBBound,
    ConditionalNCEBound,
    info_nce,
    nce_club,
)
from methods.common.residual_mi import (
    CONDITIONAL_ESTIMATORS,
    ConditionPredictor,
    ConditionResiduals,
    ResidualCLUBBound,
    ResidualNCEBound,
)

BATCH = 64
DIM_A, DIM_B, DIM_C = 3, 2, 4  # unequal, so a side scored by the other's regressor cannot pass unnoticed
HIDDEN = 8
# Every value below is computed twice in float64 by the same operations in another order: they agree to a few
# rounding errors of numbers of order 10.
TOL = dict(rtol=1e-12, atol=1e-12)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(BATCH, DIM_A, generator=g, dtype=torch.float64), torch.randn(BATCH, DIM_B, generator=g,
                                                                                      dtype=torch.float64)
    # The condition arrives in float32 (as FactorCL's detached parts do); the regressors cast it to a's dtype.
    return a, b, torch.randn(BATCH, DIM_C, generator=g)


def seeded(cls, *args, **kwargs):
    torch.manual_seed(1)
    return cls(*args, **kwargs).double()


def by_hand(predictor: ConditionPredictor, c: torch.Tensor) -> torch.Tensor:
    """g(c) = W c + b + W2 relu(W1 c + b1) + b2, written out."""
    hidden, out = predictor.correction[0], predictor.correction[2]
    correction = torch.relu(c @ hidden.weight.T + hidden.bias) @ out.weight.T + out.bias
    return c @ predictor.linear.weight.T + predictor.linear.bias + correction


def test_the_predictor_is_a_linear_map_plus_a_one_hidden_layer_correction():
    predictor = seeded(ConditionPredictor, DIM_C, DIM_A, HIDDEN)
    c = torch.randn(BATCH, DIM_C, dtype=torch.float64)
    assert predictor.correction[0].out_features == HIDDEN
    torch.testing.assert_close(predictor(c), by_hand(predictor, c), **TOL)


def test_a_residual_is_its_side_less_the_conditions_prediction_divided_by_its_spread(data):
    a, b, c = data
    residuals = seeded(ConditionResiduals, DIM_A, DIM_B, DIM_C, HIDDEN)
    r_a, r_b = residuals(a, b, c)
    left_a, left_b = a - by_hand(residuals.predict_a, c.double()), b - by_hand(residuals.predict_b, c.double())
    torch.testing.assert_close(r_a, left_a / left_a.std(dim=0), **TOL)
    torch.testing.assert_close(r_b, left_b / left_b.std(dim=0), **TOL)


def test_residuals_are_at_unit_scale_even_where_a_side_spreads_far_less_than_one(data):
    a, b, c = data
    r_a, r_b = seeded(ConditionResiduals, DIM_A, DIM_B, DIM_C, HIDDEN)(a * 1e-3, b * 1e-3, c)
    torch.testing.assert_close(r_a.std(dim=0), torch.ones(DIM_A, dtype=torch.float64), **TOL)
    torch.testing.assert_close(r_b.std(dim=0), torch.ones(DIM_B, dtype=torch.float64), **TOL)


def test_a_coordinate_the_condition_predicts_exactly_is_zero_not_nan(data):
    a, b, c = data
    residuals = seeded(ConditionResiduals, DIM_A, DIM_B, DIM_C, HIDDEN)
    with torch.no_grad():
        exact = a.clone()
        exact[:, 0] = residuals.predict_a(c.double())[:, 0]
    r_a, _ = residuals(exact, b, c)
    assert r_a[:, 0].abs().max() < 1e-9  # the rounding left of an exact prediction, over the 1e-6 floor
    assert torch.isfinite(r_a).all()


def test_gradients_reach_both_sides_through_a_fixed_scale_but_never_the_regressors_or_the_condition(data):
    a, b, c = (t.clone().requires_grad_() for t in data)
    residuals = seeded(ConditionResiduals, DIM_A, DIM_B, DIM_C, HIDDEN)
    r_a, r_b = residuals(a, b, c)
    (r_a.sum() + 2 * r_b.sum()).backward()
    with torch.no_grad():
        spread_a = (a - residuals.predict_a(c.double())).std(dim=0)
        spread_b = (b - residuals.predict_b(c.double())).std(dim=0)
    # The scale is a constant: d(sum r) / da = 1 / sd, with no term through sd's own dependence on a.
    torch.testing.assert_close(a.grad, (1 / spread_a).expand(BATCH, DIM_A), **TOL)
    torch.testing.assert_close(b.grad, (2 / spread_b).expand(BATCH, DIM_B), **TOL)
    assert c.grad is None
    assert all(p.grad is None for p in residuals.parameters())


def test_the_fit_loss_is_both_sides_mean_squared_prediction_error_and_trains_only_the_regressors(data):
    a, b, c = data
    residuals = seeded(ConditionResiduals, DIM_A, DIM_B, DIM_C, HIDDEN)
    with torch.no_grad():
        exact_a, exact_b = residuals.predict_a(c.double()), residuals.predict_b(c.double())
    assert residuals.fit_loss(exact_a, exact_b, c) == 0  # a side the condition predicts exactly
    noise_a, noise_b = 0.5 * a, 0.25 * b
    a, b, c = (t.clone().requires_grad_() for t in (exact_a + noise_a, exact_b + noise_b, c))
    loss = residuals.fit_loss(a, b, c)
    torch.testing.assert_close(loss, noise_a.square().mean() + noise_b.square().mean(), **TOL)
    loss.backward()
    assert a.grad is None and b.grad is None and c.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in residuals.parameters())


def test_a_condition_needs_at_least_one_coordinate():
    with pytest.raises(ValueError, match="^a residual conditional bound needs a condition of at least one coordinate$"):
        ConditionResiduals(DIM_A, DIM_B, 0, HIDDEN)
    ConditionResiduals(DIM_A, DIM_B, 1, HIDDEN)  # one is enough


def test_the_null_draw_gives_each_row_another_rows_residual_and_keeps_its_own_conditions_part(data):
    a, b, c = data
    residuals = seeded(ConditionResiduals, DIM_A, DIM_B, DIM_C, HIDDEN)
    drawn = residuals.null_a(a, c, None, torch.Generator().manual_seed(2))
    with torch.no_grad():
        predicted = residuals.predict_a(c.double())
    left, left_drawn = a - predicted, drawn - predicted  # a' - g(c_i) = a_j - g(c_j): row j's residual
    order = torch.cdist(left_drawn, left).argmin(dim=1)
    torch.testing.assert_close(left_drawn, left[order], **TOL)
    assert sorted(order.tolist()) == list(range(BATCH))  # a permutation: every residual drawn once
    assert (order != torch.arange(BATCH)).sum() > BATCH / 2  # rows moved (a fixed point has chance 1 / BATCH)


def test_the_null_draw_follows_its_generator_and_sends_no_gradient_to_the_regressors(data):
    a, b, c = data
    residuals = seeded(ConditionResiduals, DIM_A, DIM_B, DIM_C, HIDDEN)
    a = a.clone().requires_grad_()
    first = residuals.null_a(a, c, None, torch.Generator().manual_seed(3))
    torch.manual_seed(4)  # the global stream must not matter
    second = residuals.null_a(a, c, None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    first.sum().backward()
    torch.testing.assert_close(a.grad, torch.ones_like(a), rtol=0, atol=0)  # a permutation of a's rows
    assert all(p.grad is None for p in residuals.parameters())


@pytest.mark.parametrize("form", [ResidualNCEBound, ResidualCLUBBound])
def test_a_residual_bound_takes_the_regressors_fit_and_null_and_scores_residuals_with_a_critic_blind_to_c(data, form):
    a, b, c = data
    bound = seeded(form, DIM_A, DIM_B, DIM_C, HIDDEN, 2)
    assert not bound.uses_weights  # FactorCL reads this to log the batch's ceiling instead of a kernel's
    assert (bound.critic.side_a.in_features, bound.critic.side_b.in_features) == (DIM_A, DIM_B)
    assert bound.critic.side_a.out_features == HIDDEN and bound.critic.depth == 2
    assert bound.residuals.predict_a.correction[0].out_features == HIDDEN
    torch.testing.assert_close(bound.fit_loss(a, b, c), bound.residuals.fit_loss(a, b, c), rtol=0, atol=0)
    torch.testing.assert_close(bound.null_a(a, c, None, torch.Generator().manual_seed(5)),
                               bound.residuals.null_a(a, c, None, torch.Generator().manual_seed(5)), rtol=0, atol=0)


def test_the_residual_bounds_default_to_the_papers_critic():
    bound = ResidualNCEBound(DIM_A, DIM_B, DIM_C)
    assert bound.critic.side_a.out_features == PAPER_CRITIC_HIDDEN and bound.critic.depth == PAPER_CRITIC_DEPTH
    assert bound.residuals.predict_b.correction[0].out_features == PAPER_CRITIC_HIDDEN


def test_the_nce_form_is_info_nce_on_the_residuals_whatever_the_weights(data):
    a, b, c = (t.clone().requires_grad_() for t in data)
    bound = seeded(ResidualNCEBound, DIM_A, DIM_B, DIM_C, HIDDEN)
    value = bound(a, b, c)
    torch.testing.assert_close(value, info_nce(bound.critic(*bound.residuals(a, b, c))), **TOL)
    torch.testing.assert_close(bound(a, b, c, torch.eye(BATCH, dtype=torch.float64)), value, rtol=0, atol=0)
    assert value <= math.log(BATCH)
    value.backward()  # the critic maximizes this bound itself (with the encoders); the regressors never
    assert a.grad is not None and c.grad is None
    assert all(p.grad is not None for p in bound.critic.parameters())
    assert all(p.grad is None for p in bound.residuals.parameters())


def test_the_club_form_holds_its_critic_fixed_and_reports_the_critics_info_nce_detached(data):
    a, b, c = (t.clone().requires_grad_() for t in data)
    bound = seeded(ResidualCLUBBound, DIM_A, DIM_B, DIM_C, HIDDEN)
    club, critic_nce = bound(a, b, c, torch.eye(BATCH, dtype=torch.float64))
    scores = bound.critic(*bound.residuals(a, b, c))
    torch.testing.assert_close(club, nce_club(scores), **TOL)
    torch.testing.assert_close(critic_nce, info_nce(scores), **TOL)
    assert not critic_nce.requires_grad
    club.backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0 and c.grad is None
    assert all(p.grad is None for p in bound.parameters())


def test_the_club_critics_own_objective_moves_only_the_critic(data):
    a, b, c = (t.clone().requires_grad_() for t in data)
    bound = seeded(ResidualCLUBBound, DIM_A, DIM_B, DIM_C, HIDDEN)
    nce = bound.critic_nce(a, b, c, None)
    torch.testing.assert_close(nce, info_nce(bound.critic(*bound.residuals(a, b, c))), **TOL)
    nce.backward()
    assert a.grad is None and b.grad is None and c.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bound.critic.parameters())
    assert all(p.grad is None for p in bound.residuals.parameters())


def test_the_estimators_by_name_pair_each_infonce_form_with_its_club_form():
    assert CONDITIONAL_ESTIMATORS == {"kernel-v4": (ConditionalNCEBound, ConditionalCLUBBound),
                                      "residual": (ResidualNCEBound, ResidualCLUBBound)}
    assert all(nce.uses_weights and club.uses_weights for nce, club in [CONDITIONAL_ESTIMATORS["kernel-v4"]])
