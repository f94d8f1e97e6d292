"""FactorCL-SUP and FactorCL-SSL: the objective's terms and signs, the alternating critic step, the probe input."""

import json

import pytest
import torch
from torch import nn

from harness.catalog import METHODS
from harness.task import Batch
from harness.train import TrainConfig, _optimizers, fit
from methods.common.mi import CLUBBound
from tests.fixtures import TinySynthetic

SMALL = {"embed_dim": 16, "factor_dim": 8, "critic_hidden": 32, "critic_depth": 1}


def build(name: str, **overrides):
    torch.manual_seed(0)
    cls = METHODS.get(name)
    return cls(TinySynthetic(), cls.defaults | SMALL | overrides)


def batch_of(task, rows: int = 32, augment=None) -> Batch:
    inputs, labels, index = next(task.load().train.batches(rows))
    return Batch(inputs, labels, index, augment or task.augment)


class Recorder(nn.Module):
    """Stands in for a bound: records what it was given and returns a fixed value."""

    def __init__(self, value: float):
        super().__init__()
        self.value = torch.tensor(value)
        self.seen = None

    def forward(self, a, b):
        self.seen = (a.detach(), b.detach())
        return self.value


@pytest.mark.parametrize("name", ["factorcl-sup", "factorcl-ssl"])
def test_the_objective_adds_the_nce_terms_and_subtracts_the_club_terms(name):
    method = build(name)
    values = {"shared_nce": 2.0, "shared_club_given_y": 3.0, "unique_club": 11.0, "unique_nce_given_y": 13.0}
    for term, value in values.items():
        setattr(method, term, Recorder(value))
    method.relevance = nn.ModuleList([Recorder(5.0), Recorder(7.0)])
    out = method.loss(batch_of(method.task))
    # maximize I_NCE(S) - I_CLUB(S | Y) + I_NCE(U1; Y) + I_NCE(U2; Y) - I_CLUB(U1; U2) + I_NCE(U1; U2 | Y)
    assert out["loss"].item() == pytest.approx(-(2 - 3 + 5 + 7 - 11 + 13))
    assert out["unique1_nce_y"].item() == 5.0 and out["unique_club"].item() == 11.0


def test_sup_conditions_both_sides_on_the_label_and_pairs_unique_parts_with_it():
    method = build("factorcl-sup")
    for term in ("shared_club_given_y", "unique_nce_given_y", "unique_club"):
        setattr(method, term, Recorder(0.0))
    method.relevance = nn.ModuleList([Recorder(0.0), Recorder(0.0)])
    batch = batch_of(method.task)
    method.loss(batch)
    expected = torch.nn.functional.one_hot(batch.labels, 2).float()
    factors = method.factors(batch.inputs)
    for term in ("shared_club_given_y", "unique_nce_given_y"):
        a, b = getattr(method, term).seen
        assert torch.equal(a[:, -2:], expected) and torch.equal(b[:, -2:], expected), term
    assert torch.allclose(method.shared_club_given_y.seen[0][:, :-2], factors.shared[0], atol=1e-6)
    assert torch.allclose(method.unique_nce_given_y.seen[1][:, :-2], factors.unique[1], atol=1e-6)
    assert torch.allclose(method.unique_club.seen[0], factors.unique[0], atol=1e-6)
    assert torch.equal(method.relevance[0].seen[1], batch.labels)


def test_ssl_conditions_each_modality_on_its_own_augmentation_not_on_itself():
    method = build("factorcl-ssl")
    for term in ("shared_club_given_y", "unique_nce_given_y"):
        setattr(method, term, Recorder(0.0))
    method.relevance = nn.ModuleList([Recorder(0.0), Recorder(0.0)])
    # A known, deterministic "augmentation", different for each modality.
    offsets = {"x1": 1.0, "x2": -2.0}
    batch = batch_of(method.task, augment=lambda m, x: x + offsets[m])
    method.loss(batch)
    factors = method.factors(batch.inputs)
    augmented = method.factors({m: x + offsets[m] for m, x in batch.inputs.items()})
    k = SMALL["factor_dim"]
    a, b = method.shared_club_given_y.seen
    assert torch.allclose(a[:, :k], factors.shared[0], atol=1e-6)
    assert torch.allclose(a[:, k:], augmented.shared[0], atol=1e-6)
    assert torch.allclose(b[:, k:], augmented.shared[1], atol=1e-6)
    assert not torch.allclose(a[:, k:], a[:, :k], atol=1e-3), "conditioned on itself, as the public code does"
    a, b = method.unique_nce_given_y.seen
    assert torch.allclose(a[:, k:], augmented.unique[0], atol=1e-6)
    assert torch.allclose(b[:, k:], augmented.unique[1], atol=1e-6)
    z, target = method.relevance[1].seen
    assert torch.allclose(z, factors.unique[1], atol=1e-6) and torch.allclose(target, augmented.unique[1], atol=1e-6)


def test_club_critics_learn_at_their_own_scaled_rate():
    _, aux = _optimizers(build("factorcl-sup", club_lr_scale=10.0), TrainConfig(1, 32, 1e-3, 0.0, torch.device("cpu")))
    assert aux[0][1].param_groups[0]["lr"] == pytest.approx(1e-2)


@pytest.mark.parametrize("name", ["factorcl-sup", "factorcl-ssl"])
def test_club_critics_are_trained_only_by_their_own_step(name):
    method = build(name)
    main, aux = _optimizers(method, TrainConfig(1, 32, 1e-3, 0.0, torch.device("cpu")))
    club_ids = {id(p) for bound in (method.shared_club_given_y, method.unique_club) for p in bound.parameters()}
    main_ids = {id(p) for group in main.param_groups for p in group["params"]}
    assert club_ids and club_ids.isdisjoint(main_ids)
    assert [id(p) for p in aux[0][0].parameters] == [id(p) for b in (method.shared_club_given_y, method.unique_club)
                                                     for p in b.parameters()]
    batch = batch_of(method.task)
    method.loss(batch)["loss"].backward()
    assert all(p.grad is None for b in (method.shared_club_given_y, method.unique_club) for p in b.parameters())
    assert method.shared_heads["x1"].weight.grad is not None
    method.zero_grad(set_to_none=True)
    method.club_critic_loss(batch).backward()
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
    assert isinstance(deep.unique_club, CLUBBound)


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
        assert 0.0 <= record["metrics"]["test_acc"] <= 1.0
