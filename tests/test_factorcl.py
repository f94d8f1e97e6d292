"""FactorCL-SUP and FactorCL-SSL: the objective's terms and signs, the alternating critic step, the probe input."""

import json
import math

import pytest
import torch
from torch import nn

from harness.api.catalog import METHODS
from harness.api.task import Batch
from harness.running.train import TrainConfig, _optimizers, fit
from methods.common.mi import ConditionalCLUBBound
from tests.fixtures import TinySynthetic

SMALL = {"embed_dim": 16, "factor_dim": 8, "critic_hidden": 32, "critic_depth": 1}


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """A tensor the bound was given against the same one recomputed: the same float32 computation, O(1)
    values, so within torch.testing's float32 tolerances (rtol 1.3e-6, atol 1e-5), a few ulps."""
    return torch.allclose(a, b, rtol=1.3e-6, atol=1e-5)


def build(name: str, **overrides):
    torch.manual_seed(0)
    cls = METHODS.get(name)
    return cls(TinySynthetic(), cls.defaults | SMALL | overrides)


def batch_of(task, rows: int = 32, augment=None) -> Batch:
    inputs, labels, index = next(task.load().train.batches(rows))
    return Batch(inputs, labels, index, augment or task.augment)


class Recorder(nn.Module):
    """Stands in for a bound: records what it was given and returns a fixed value."""

    def __init__(self, value: float, critic_nce: float | None = None):
        super().__init__()
        self.value = torch.tensor(value)
        self.critic_nce = None if critic_nce is None else torch.tensor(critic_nce)
        self.seen = None

    def forward(self, *args):
        self.seen = tuple(None if a is None else a.detach() for a in args)
        return self.value if self.critic_nce is None else (self.value, self.critic_nce)


def replace_bounds(method, values: dict[str, float], relevance=(0.0, 0.0)):
    for term, value in values.items():
        setattr(method, term, Recorder(value, 0.5 if "club" in term else None))
    method.relevance = nn.ModuleList([Recorder(relevance[0]), Recorder(relevance[1])])


@pytest.mark.parametrize("name", ["factorcl-sup", "factorcl-ssl"])
def test_the_objective_adds_the_nce_terms_and_subtracts_the_club_terms(name):
    method = build(name)
    replace_bounds(method, {"shared_nce": 2.0, "shared_club_given_y": 3.0, "unique_club": 11.0,
                            "unique_nce_given_y": 13.0}, relevance=(5.0, 7.0))
    out = method.loss(batch_of(method.task))
    # maximize I_NCE(S) - I_CLUB(S | Y) + I_NCE(U1; Y) + I_NCE(U2; Y) - I_CLUB(U1; U2) + I_NCE(U1; U2 | Y)
    # Small integers sum exactly in float32 in any order; approx's default rel 1e-6 is never used.
    assert out["loss"].item() == pytest.approx(-(2 - 3 + 5 + 7 - 11 + 13))
    assert out["unique1_nce_y"].item() == 5.0 and out["unique_club"].item() == 11.0
    assert out["shared_club_critic_nce"].item() == 0.5 and out["unique_club_critic_nce"].item() == 0.5


def test_sup_conditions_on_the_label_with_negatives_from_the_anchors_own_class():
    method = build("factorcl-sup")
    replace_bounds(method, {"shared_club_given_y": 0.0, "unique_nce_given_y": 0.0, "unique_club": 0.0})
    batch = batch_of(method.task)
    method.loss(batch)
    expected = torch.nn.functional.one_hot(batch.labels, 2).float()
    same_class = batch.labels[:, None] == batch.labels[None, :]
    factors = method.factors(batch.inputs)
    for term, part in (("shared_club_given_y", factors.shared), ("unique_nce_given_y", factors.unique)):
        a, b, given, weights = getattr(method, term).seen
        assert close(a, part[0]) and close(b, part[1]), term
        assert torch.equal(given, expected), term
        assert torch.equal(weights > 0, same_class), f"{term}: negatives outside the anchor's class"
        # Softmax rows summed over 32 entries: within 32 eps32 = 3.8e-6 of 1, inside allclose's rtol 1e-5 at 1.
        assert torch.allclose(weights.sum(dim=1), torch.ones(len(weights))), term
    a, b = method.unique_club.seen
    assert close(a, factors.unique[0]) and close(b, factors.unique[1])
    assert torch.equal(method.relevance[0].seen[1], batch.labels)


def test_ssl_conditions_each_term_on_both_augmented_views_of_its_part():
    method = build("factorcl-ssl")
    replace_bounds(method, {"shared_club_given_y": 0.0, "unique_nce_given_y": 0.0})
    # A known, deterministic "augmentation", different for each modality.
    offsets = {"x1": 1.0, "x2": -2.0}
    batch = batch_of(method.task, augment=lambda m, x: x + offsets[m])
    method.loss(batch)
    factors = method.factors(batch.inputs)
    augmented = method.factors({m: x + offsets[m] for m, x in batch.inputs.items()})
    for term, part, views in (("shared_club_given_y", factors.shared, augmented.shared),
                              ("unique_nce_given_y", factors.unique, augmented.unique)):
        a, b, given, weights = getattr(method, term).seen
        assert close(a, part[0]) and close(b, part[1]), term
        assert close(given, torch.cat(views, dim=1)), term
        # Offsets of 1 and 2 on unit-scale inputs move the factors by O(0.1): anything past rounding (the
        # 1e-5 above) tells the views from the parts; 1e-3 is a hundred times rounding.
        assert not torch.allclose(given, torch.cat(part, dim=1), atol=1e-3), f"{term}: conditioned on itself"
        assert (weights.argmax(dim=1) == torch.arange(len(weights))).all(), term
    z, target = method.relevance[1].seen
    assert close(z, factors.unique[1]) and close(target, augmented.unique[1])


def test_ssl_kernel_keeps_its_neighbours_even_when_the_augmentation_changes_nothing():
    """A view identical to its sample moves nothing: the movement rule alone would give one-hot weights
    and terms pinned at 0 (version 3); the neighbour floor widens the kernel instead."""
    method = build("factorcl-ssl")
    out = method.loss(batch_of(method.task, augment=lambda m, x: x))
    # 16 effective neighbours at batch 32 (the floor is min(16, 32 / 2)). 1 / mean w_ii is computed as the
    # bisection computed it, up to float32 rounding of a 32-term sum and a mean: a relative 32 eps32 = 3.8e-6.
    for which in ("shared", "unique"):
        assert out[f"{which}_cond_neighbours"].item() >= 16 * (1 - 3.8e-6), out[f"{which}_cond_neighbours"]
        # Jensen: mean -log w_ii >= -log mean w_ii = log 16.
        assert out[f"{which}_cond_ceiling"].item() >= math.log(16) - 1e-5
        assert out[f"{which}_cond_bandwidth"].item() > 0
    # The residual estimator (the default) draws its negatives from the whole batch, so its critic's ceiling is
    # log B; version 4's kernel estimator draws them by the kernel, so its ceiling is the kernel's.
    assert out["shared_club_ceiling"].item() == pytest.approx(math.log(32), abs=1e-6)
    kernel = build("factorcl-ssl", conditional_estimator="kernel-v4")
    out = kernel.loss(batch_of(kernel.task, augment=lambda m, x: x))
    assert out["shared_club_ceiling"].item() == pytest.approx(out["shared_cond_ceiling"].item(), abs=1e-6)


def test_club_critics_learn_at_their_own_scaled_rate():
    _, aux = _optimizers(build("factorcl-sup", club_lr_scale=10.0), TrainConfig(1, 32, 1e-3, 0.0, torch.device("cpu")))
    assert aux[0][1].param_groups[0]["lr"] == pytest.approx(1e-2)  # 1e-3 x 10 in float64: one ulp at most


@pytest.mark.parametrize("name", ["factorcl-sup", "factorcl-ssl"])
def test_club_critics_are_trained_only_by_their_own_step(name):
    method = build(name)
    main, aux = _optimizers(method, TrainConfig(1, 32, 1e-3, 0.0, torch.device("cpu")))
    club_ids = {id(p) for bound in (method.shared_club_given_y, method.unique_club) for p in bound.parameters()}
    main_ids = {id(p) for group in main.param_groups for p in group["params"]}
    assert club_ids and club_ids.isdisjoint(main_ids)
    # The residual estimator's regressors (SSL's default) train there too, on their own least squares.
    regressors = getattr(method.unique_nce_given_y, "residuals", None)
    assert [id(p) for p in aux[0][0].parameters] == [id(p) for b in (method.shared_club_given_y, method.unique_club)
                                                     for p in b.parameters()] + \
        ([id(p) for p in regressors.parameters()] if regressors is not None else [])
    assert (regressors is not None) == (name == "factorcl-ssl")
    assert not {id(p) for p in (regressors.parameters() if regressors is not None else [])} & main_ids
    batch = batch_of(method.task)
    method.loss(batch)["loss"].backward()
    assert all(p.grad is None for b in (method.shared_club_given_y, method.unique_club) for p in b.parameters())
    assert method.shared_heads["x1"].weight.grad is not None
    method.zero_grad(set_to_none=True)
    method.club_critic_loss(batch)["loss"].backward()
    assert all(p.grad is not None for p in method.unique_club.parameters())
    assert method.shared_heads["x1"].weight.grad is None, "the critics' step must not move the encoders"


@pytest.mark.parametrize("name", ["factorcl-sup", "factorcl-ssl"])
def test_the_probe_sees_all_four_parts(name):
    method = build(name)
    batch = batch_of(method.task)
    parts = method.parts(batch.inputs)
    assert list(parts) == ["ZS1", "ZU1", "ZS2", "ZU2"]
    z = method.encode(batch.inputs)
    assert z.shape == (32, 4 * SMALL["factor_dim"])
    assert torch.equal(z, torch.cat(list(parts.values()), dim=1))


def test_critic_depth_is_a_hyperparameter():
    deep = build("factorcl-sup", critic_depth=2)
    linears = [m for m in deep.unique_club.critic.tail.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2  # hidden x hidden, then hidden x 1
    assert isinstance(deep.unique_club, ConditionalCLUBBound)


@pytest.mark.parametrize("normalize", [True, False])
def test_factor_embeddings_lie_on_a_sphere_of_radius_sqrt_dim_only_when_normalized(normalize):
    method = build("factorcl-sup", normalize_factors=normalize)
    norms = method.encode(batch_of(method.task).inputs).view(32, 4, -1).norm(dim=2)
    # Normalizing then scaling by sqrt(8) = 2.83: 8 squares summed, a sqrt, a divide and a multiply round to
    # ~11 eps32 x 2.83 = 3.7e-6, inside torch.testing's float32 tolerances (1e-5 + 1.3e-6 x 2.83); the
    # unnormalized heads' norms at initialisation are 0.3-0.8, nowhere near.
    on_sphere = torch.allclose(norms, torch.full_like(norms, SMALL["factor_dim"] ** 0.5), rtol=1.3e-6, atol=1e-5)
    assert on_sphere == normalize


def test_the_club_critics_take_club_steps_steps_per_main_step_and_log_each_critic():
    method = build("factorcl-sup", club_steps=3)
    calls = []
    original = method.club_critic_loss
    method.club_critic_loss = lambda batch: calls.append(1) or original(batch)
    data = method.task.load()
    config = TrainConfig(epochs=1, batch_size=64, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                         progress=False)
    history = fit(method, data, config, torch.Generator().manual_seed(0)).history
    batches = -(-len(data.train) // 64)
    assert len(calls) == 3 * batches
    for key in ("train_club_critics_loss", "train_club_critics_shared_nce", "train_club_critics_unique_nce",
                "train_shared_club_critic_nce", "train_unique_club_critic_nce", "train_shared_club_given_y",
                "train_unique_club", "train_shared_nce", "train_unique_nce_given_y", "train_unique1_nce_y"):
        assert key in history[0], key
    # Each step's loss -(a + b) rounds once in float32, by eps32 (|a| + |b|); the critics' InfoNCE is at
    # most log 64 = 4.2 at batch 64 and near 0 at initialisation: 2 x 4.2 x 1.2e-7 = 1e-6, and 1e-5 lets
    # the critics fall tenfold further below before it binds; a dropped or sign-flipped term moves it by ~0.02.
    assert history[0]["train_club_critics_loss"] == pytest.approx(
        -(history[0]["train_club_critics_shared_nce"] + history[0]["train_club_critics_unique_nce"]), abs=1e-5)


def record_steps(method, steps: int, shared=0.3, unique=0.02, shared_ceiling=3.0, unique_ceiling=4.2):
    """Steps as a training run records them, each value a constant or a function of the 0-based step."""
    value = lambda v, i: float(v(i) if callable(v) else v)  # noqa: E731
    for i in range(steps):
        method.critic_windows.add({k: torch.tensor(value(v, i)) for k, v in (
            ("shared_club_critic_nce", shared), ("unique_club_critic_nce", unique),
            ("shared_club_ceiling", shared_ceiling), ("unique_club_ceiling", unique_ceiling))})


def test_the_check_fails_a_run_whose_critic_fell_below_chance_for_one_window_an_epoch_mean_hides():
    method = build("factorcl-sup")
    record_steps(method, 120)  # two epochs of 60 steps
    checks = {c.name: c for c in method.check_assumptions([{}] * 2)}
    assert set(checks) == {"shared_club_critic_above_chance", "unique_club_critic_above_chance"}
    assert all(c.state == "held" for c in checks.values()), [c.detail for c in checks.values()]
    method = build("factorcl-sup")
    # Steps 81-100 (epoch 2) at -0.5 among 0.3: epoch 2's mean is (40 x 0.3 - 20 x 0.5) / 60 = +0.033, above the
    # floor, which version 3's epoch-mean check passed.
    record_steps(method, 120, unique=lambda i: -0.5 if 80 <= i < 100 else 0.3)
    checks = {c.name: c for c in method.check_assumptions([{}] * 2)}
    assert checks["shared_club_critic_above_chance"].state == "held"
    failed = checks["unique_club_critic_above_chance"]
    assert failed.failed and failed.value == pytest.approx(-0.5)  # a mean of 20 equal float32 values, exact
    assert "steps 81-100 (epoch 2)" in failed.detail and "-0.500" in failed.detail, failed.detail


def test_a_term_whose_weights_leave_nothing_to_measure_is_not_measurable_never_held():
    method = build("factorcl-ssl")
    # Version 3's SSL kernel: w_ii near 0.8, so the shared critic's InfoNCE sat near 0 whatever it learned.
    record_steps(method, 60, shared=0.004, shared_ceiling=lambda i: 0.9 if i < 20 else 0.22)
    checks = {c.name: c for c in method.check_assumptions([{}])}
    blind = checks["shared_club_critic_above_chance"]
    assert blind.state == "not measurable" and not blind.failed and not blind.held
    assert "2 of 3 windows" in blind.detail and "0.220" in blind.detail, blind.detail
    assert checks["unique_club_critic_above_chance"].state == "held"
    # A measurable window that was outrun still fails the run, whatever other windows could not measure.
    method = build("factorcl-ssl")
    record_steps(method, 60, shared=lambda i: -0.3 if i < 20 else 0.004,
                 shared_ceiling=lambda i: 0.9 if i < 20 else 0.2)
    assert {c.name: c for c in method.check_assumptions([{}])}["shared_club_critic_above_chance"].failed


def test_a_run_that_trained_no_step_has_nothing_measured():
    checks = build("factorcl-sup").check_assumptions([])
    assert [c.state for c in checks] == ["not measurable"] * 2


def test_the_ablation_drops_exactly_the_two_conditional_terms_and_their_check():
    full, ablated = build("factorcl-ssl"), build("factorcl-ssl-nocond")
    values = {"shared_nce": 2.0, "shared_club_given_y": 3.0, "unique_club": 11.0, "unique_nce_given_y": 13.0}
    for method in (full, ablated):
        replace_bounds(method, values, relevance=(5.0, 7.0))
    assert full.loss(batch_of(full.task))["loss"].item() == pytest.approx(-(2 - 3 + 5 + 7 - 11 + 13))
    assert ablated.loss(batch_of(ablated.task))["loss"].item() == pytest.approx(-(2 + 5 + 7 - 11))
    record_steps(ablated, 20)
    assert [c.name for c in ablated.check_assumptions([{}])] == ["unique_club_critic_above_chance"]
    assert "without conditional terms" in ablated.display_name


@pytest.mark.parametrize("name, dropped, objective, checked", [
    ("factorcl-ssl-no-shared-cond", "shared_club_given_y", 2 + 5 + 7 - 11 + 13, ["unique_club_critic_above_chance"]),
    ("factorcl-ssl-no-unique-cond", "unique_nce_given_y", 2 - 3 + 5 + 7 - 11,
     ["shared_club_critic_above_chance", "unique_club_critic_above_chance"]),
])
def test_each_one_term_ablation_drops_exactly_its_term(name, dropped, objective, checked):
    ablated = build(name)
    values = {"shared_nce": 2.0, "shared_club_given_y": 3.0, "unique_club": 11.0, "unique_nce_given_y": 13.0}
    replace_bounds(ablated, values, relevance=(5.0, 7.0))
    out = ablated.loss(batch_of(ablated.task))
    assert out["loss"].item() == pytest.approx(-objective)
    assert out[dropped].item() == pytest.approx(values[dropped])  # still computed and logged, as the docstring says
    record_steps(ablated, 20)
    assert [c.name for c in ablated.check_assumptions([{}])] == checked


@pytest.mark.parametrize("critics, stays_a_bound", [
    ({"club_lr_scale": 0.0, "normalize_factors": False}, False),  # a critic that cannot learn is exploited
    ({}, True),  # the defaults: several critic steps per main step, normalized factors
])
def test_at_a_high_learning_rate_only_critics_that_keep_up_keep_the_bound(critics, stays_a_bound):
    method = build("factorcl-sup", **critics)
    config = TrainConfig(epochs=3, batch_size=64, lr=1e-2, weight_decay=0.0, device=torch.device("cpu"),
                         progress=False)
    history = fit(method, method.task.load(), config, torch.Generator().manual_seed(0)).history
    checks = method.check_assumptions(history)
    assert all(c.held for c in checks) == stays_a_bound, [c.detail for c in checks]


def test_training_raises_the_label_terms_on_the_tiny_task():
    """A few epochs must make the unique parts informative about the label (I_NCE(Z_U; Y) grows)."""
    method = build("factorcl-sup")
    task = method.task
    data = task.load()
    config = TrainConfig(epochs=4, batch_size=64, lr=3e-3, weight_decay=0.0, device=torch.device("cpu"),
                         progress=False)
    history = fit(method, data, config, torch.Generator().manual_seed(0)).history
    first, last = history[0], history[-1]
    assert last["train_unique1_nce_y"] > first["train_unique1_nce_y"] + 0.02, (first, last)
    assert last["train_loss"] < first["train_loss"]
    assert "train_club_critics_loss" in last


def test_both_variants_run_through_the_harness(harness_run):
    # Every tuned hyperparameter fixed: no tuning trials, one seed each, so the test stays short.
    fixed = ["--set", "lr=0.001", "--set", "embed_dim=64", "--set", "factor_dim=32", "--set", "critic_hidden=64"]
    code = harness_run("--method", "factorcl-sup,factorcl-ssl", "--task", "tiny-synthetic", "--seeds", "1", *fixed)
    assert code == 0
    for name in ("factorcl-sup", "factorcl-ssl"):
        record = json.loads((harness_run.results / "records" / "tiny-synthetic" / name / "seed0.json").read_text())
        assert record["status"] == "ok" and record["hparams"]["critic_depth"] == 1
        assert set(record["checks"]) == {"shared_club_critic_above_chance", "unique_club_critic_above_chance",
                                         "audit_shared_club_given_y", "audit_unique_club",
                                         "null_shared_club_given_y", "null_unique_nce_given_y"}
        for term in ("shared_club_given_y", "unique_nce_given_y"):  # each conditional term beside its control
            assert "null control" in record["checks"][f"null_{term}"]["detail"]
        assert record["hparams"]["normalize_factors"] == (name == "factorcl-ssl")  # each variant's default
        assert 0.0 <= record["metrics"]["test_acc"] <= 1.0


def test_the_ssl_kernel_keeps_its_neighbour_minimum_in_every_batch_of_a_training_run():
    method = build("factorcl-ssl")
    seen = []
    original = method.context

    def recording(batch, factors):
        ctx = original(batch, factors)
        seen.append([float(ctx.shared.stats["neighbours"]), float(ctx.unique.stats["neighbours"])])
        return ctx

    method.context = recording
    config = TrainConfig(epochs=2, batch_size=64, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                         progress=False)
    history = fit(method, method.task.load(), config, torch.Generator().manual_seed(0)).history
    batches = -(-len(method.task.load().train) // 64)
    # One context per main step and one per critic step (club_steps = 5).
    assert len(seen) == 2 * batches * (1 + method.hparams["club_steps"])
    # 16 = min(16, half of each batch of 64: 320 rows, five full batches); bisection meets it, and
    # recomputing 1 / mean w_ii from the softmax rounds by at most a relative 64 eps32 = 7.6e-6.
    assert min(min(pair) for pair in seen) >= 16 * (1 - 7.6e-6), min(min(pair) for pair in seen)
    for epoch in history:  # and every epoch's history carries what the kernel left to measure
        for key in ("self_weight", "neighbours", "ceiling", "bandwidth"):
            assert f"train_shared_cond_{key}" in epoch and f"train_unique_cond_{key}" in epoch, key
