"""The MI bounds against correlated Gaussians, whose mutual information is known in closed form."""

import math

import pytest
import torch

from methods.common import mi
from methods.common.mi import (CLUBBound, ConcatCritic, LabelNCEBound, NCEBound, _PairReLUDot, condition, info_nce,
                               nce_club, one_hot)

DIM = 2
BATCH = 64
HIDDEN = 32
STEPS = 200
EVAL_BATCHES = 20
LEVELS = (0.5, 1.0, 2.0, 6.0)  # true MI in nats; the last is above log(BATCH) = 4.16


def correlated(n: int, mi: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x ~ N(0, I), y = rho x + sqrt(1 - rho^2) noise, with rho set so I(X; Y) = -d/2 log(1 - rho^2) = mi."""
    rho = math.sqrt(1 - math.exp(-2 * mi / DIM))
    x = torch.randn(n, DIM, generator=generator)
    return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(n, DIM, generator=generator)


def trained_critic(sample, dims: tuple[int, int], seed: int = 0) -> ConcatCritic:
    torch.manual_seed(seed)
    bound = NCEBound(*dims, hidden=HIDDEN)
    optimizer = torch.optim.Adam(bound.parameters(), lr=5e-3)
    for _ in range(STEPS):
        loss = -bound(*sample())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return bound.critic


@torch.no_grad()
def mean_estimates(critic: ConcatCritic, sample) -> tuple[float, float]:
    scores = [critic(*sample()) for _ in range(EVAL_BATCHES)]
    return (sum(info_nce(s).item() for s in scores) / EVAL_BATCHES,
            sum(nce_club(s).item() for s in scores) / EVAL_BATCHES)


@pytest.fixture(scope="module")
def estimates() -> dict[float, tuple[float, float]]:
    """(InfoNCE, NCE-CLUB) per true MI level, from one critic trained on InfoNCE per level."""
    out = {}
    for mi in LEVELS:
        generator = torch.Generator().manual_seed(1)
        sample = lambda: correlated(BATCH, mi, generator)  # noqa: E731
        out[mi] = mean_estimates(trained_critic(sample, (DIM, DIM)), sample)
    return out


def test_the_split_critic_scores_every_pair_as_the_concatenated_mlp_does():
    torch.manual_seed(0)
    for depth in (1, 2):
        critic = ConcatCritic(3, 4, hidden=16, depth=depth).double()
        a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
        first = torch.nn.Linear(7, 16).double()
        with torch.no_grad():
            first.weight.copy_(torch.cat([critic.side_a.weight, critic.side_b.weight], dim=1))
            first.bias.copy_(critic.side_a.bias)
        pairs = torch.cat([a[:, None].expand(5, 6, 3), b[None].expand(5, 6, 4)], dim=-1)  # the B x B x 2d input
        naive = critic.tail(first(pairs)).squeeze(-1)
        assert torch.allclose(critic(a, b), naive, atol=1e-12), f"depth {depth}"
        assert torch.allclose(critic.paired(a, b[:5]), naive.diagonal(), atol=1e-12)


def test_the_blockwise_pair_kernel_has_the_gradient_of_the_plain_form():
    torch.manual_seed(0)
    inputs = [torch.randn(9, 6, dtype=torch.float64, requires_grad=True),
              torch.randn(5, 6, dtype=torch.float64, requires_grad=True),
              torch.randn(6, dtype=torch.float64, requires_grad=True)]
    assert torch.autograd.gradcheck(_PairReLUDot.apply, inputs)


def test_info_nce_never_exceeds_log_batch_size(estimates):
    for mi, (nce, _) in estimates.items():
        assert nce <= math.log(BATCH) + 1e-6, mi


def test_info_nce_tracks_the_true_mi_below_log_batch_size(estimates):
    for mi in (0.5, 1.0, 2.0):
        nce, _ = estimates[mi]
        assert mi - 0.3 < nce < mi + 0.1, f"true {mi}, InfoNCE {nce:.3f}"
    # Above log B the bound saturates: it cannot report the truth, only stay under log B.
    assert estimates[6.0][0] < 6.0 - 1.0


def test_info_nce_grows_with_the_true_mi(estimates):
    values = [estimates[mi][0] for mi in LEVELS]
    assert values == sorted(values), values


def test_nce_club_stays_above_the_true_mi(estimates):
    for mi, (_, club) in estimates.items():
        assert club > mi, f"true {mi}, NCE-CLUB {club:.3f}"


def test_club_bound_passes_gradients_to_embeddings_but_not_to_its_critic():
    torch.manual_seed(0)
    bound = CLUBBound(3, 3, hidden=8)
    a, b = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3, requires_grad=True)
    bound(a, b).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is None for p in bound.parameters())
    bound.critic_loss(a, b).backward()
    assert all(p.grad is not None for p in bound.parameters())


def test_the_label_bound_equals_scoring_every_pair_of_one_hot_labels():
    torch.manual_seed(0)
    bound = LabelNCEBound(4, num_classes=3, hidden=8)
    z, labels = torch.randn(10, 4), torch.randint(0, 3, (10,))
    assert torch.allclose(bound(z, labels), info_nce(bound.critic(z, one_hot(labels, 3))), atol=1e-6)


def test_the_conditional_bound_measures_dependence_left_after_the_condition():
    """X1 and X2 share a binary C and, in one case, correlated noise besides.

    Conditioning both sides on C, the estimate is I(X1; X2 | C) + H(C): about log 2
    when C explains all the dependence, about log 2 + the noise MI otherwise.
    """

    def sample_for(noise_mi: float, generator: torch.Generator):
        def sample():
            c = torch.randint(0, 2, (BATCH,), generator=generator)
            shift = 3.0 * (2 * c[:, None].float() - 1)
            if noise_mi > 0:
                n1, n2 = correlated(BATCH, noise_mi, generator)
            else:
                n1, n2 = torch.randn(BATCH, DIM, generator=generator), torch.randn(BATCH, DIM, generator=generator)
            return condition(shift + n1, one_hot(c, 2)), condition(shift + n2, one_hot(c, 2))

        return sample

    found = {}
    for noise_mi in (0.0, 1.5):
        sample = sample_for(noise_mi, torch.Generator().manual_seed(2))
        found[noise_mi] = mean_estimates(trained_critic(sample, (DIM + 2, DIM + 2)), sample)[0] - math.log(2)
    assert abs(found[0.0]) < 0.25, found
    assert 1.5 - 0.5 < found[1.5] < 1.5 + 0.1, found


def test_the_fused_pair_critic_equals_the_eager_form_in_scores_and_gradients():
    torch.manual_seed(0)
    a, b = torch.randn(160, 64), torch.randn(128, 64)  # 160 x 128 pairs: on the fused path; uneven on purpose
    fused, eager = ConcatCritic(64, 64, hidden=96), ConcatCritic(64, 64, hidden=96, fused=False)
    eager.load_state_dict(fused.state_dict())
    results = []
    for critic in (fused, eager):
        x, y = a.clone().requires_grad_(), b.clone().requires_grad_()
        scores = critic(x, y)
        (scores * torch.linspace(-1, 1, scores.numel()).view_as(scores)).sum().backward()
        results.append([scores, x.grad, y.grad, *(p.grad for p in critic.parameters())])
    assert mi.FUSED.available, "the fused kernel should compile on this machine"
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_without_a_compiler_the_eager_form_runs_and_says_so_once(monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(mi, "FUSED", mi._FusedPairKernels())
    monkeypatch.setattr(torch, "compile", no_compiler)
    critic = ConcatCritic(8, 8, hidden=16)
    a, b = torch.randn(128, 8), torch.randn(128, 8)
    with caplog.at_level("INFO", logger="methods.common.mi"):
        first, second = critic(a, b), critic(a, b)
    critic.fused = False
    assert torch.equal(first, critic(a, b)) and torch.equal(second, first)
    assert mi.FUSED.available is False
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "eager" in caplog.records[0].message
