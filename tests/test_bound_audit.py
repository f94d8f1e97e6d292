"""The held-out bound audit: catches a CLUB "upper bound" below a fresh lower bound, passes an honest one,
runs on final seeds through the runner, and its violation marks the leaderboard."""

import json
import math

import pytest
import torch

from harness.results.leaderboard import CHECK_FAILED, render
from methods.common import bound_audit
from methods.common.bound_audit import TermAudit, TermPairs, audit_term, one_sided_bound
from methods.common.mi import ConditionalCLUBBound
from tests.fixtures import TinySynthetic

DIM, RHO, BATCH = 4, 0.8, 64
TRUE_MI = -0.5 * DIM * math.log(1 - RHO**2)  # 2.04 nats: four independent coordinate pairs, each correlated 0.8


def gaussian_pairs(batches: int, seed: int, rho: float = RHO) -> list[TermPairs]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        a = torch.randn(BATCH, DIM, generator=g)
        b = rho * a + math.sqrt(1 - rho**2) * torch.randn(BATCH, DIM, generator=g)
        out.append(TermPairs(a, b))
    return out


def estimator(seed: int = 0) -> ConditionalCLUBBound:
    torch.manual_seed(seed)
    return ConditionalCLUBBound(DIM, DIM, hidden=64)


def trained(club: ConditionalCLUBBound, pairs: list[TermPairs], steps: int = 300) -> ConditionalCLUBBound:
    optimizer = torch.optim.Adam(club.parameters(), lr=1e-3)
    for step in range(steps):
        loss = -club.critic_nce(*pairs[step % len(pairs)].args())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return club


def test_an_estimator_pinned_near_zero_on_dependent_data_is_caught():
    club = estimator()
    with torch.no_grad():  # a critic scoring every pair alike: NCE-CLUB exactly 0 where the MI is 2 nats
        for p in club.critic.tail[-1].parameters():
            p.zero_()
    audit = audit_term("unique_club", club, gaussian_pairs(40, seed=1), gaussian_pairs(11, seed=2), seed=0)
    assert abs(audit.club) < 1e-6
    assert 1.0 < audit.fresh_nce <= TRUE_MI + audit.tolerance  # a valid lower bound, well above 1 nat
    assert audit.violated and audit.check().state == "violated"
    assert "is no upper bound" in audit.check().detail and "11 batches" in audit.check().detail


def test_a_well_trained_estimator_is_an_upper_bound_and_passes():
    fit_on = gaussian_pairs(40, seed=1)
    club = trained(estimator(seed=3), fit_on)
    audit = audit_term("unique_club", club, fit_on, gaussian_pairs(11, seed=2), seed=0)
    # NCE-CLUB with a critic near the log density ratio is I + KL(p(a)p(b) || p(a,b)) >= I >= InfoNCE.
    assert audit.club > audit.fresh_nce > 1.0
    assert not audit.violated and audit.check().state == "held"


def test_on_independent_data_an_untrained_estimator_passes():
    club = estimator()
    audit = audit_term("unique_club", club, gaussian_pairs(40, seed=1, rho=0.0), gaussian_pairs(11, seed=2, rho=0.0),
                       seed=0)
    assert audit.check().state == "held"  # nothing to find: the fresh critic's InfoNCE stays near 0


def test_the_audit_is_deterministic_for_a_seed_and_leaves_the_random_stream_alone():
    fit_on, held = gaussian_pairs(10, seed=1), gaussian_pairs(11, seed=2)
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    first = audit_term("t", estimator(), fit_on, held, seed=0, steps=20)
    torch.manual_seed(5)
    assert torch.equal(before, torch.random.get_rng_state())
    second = audit_term("t", estimator(), fit_on, held, seed=0, steps=20)
    assert first == second


def test_the_tolerance_is_the_one_sided_t_bound_of_the_mean_difference():
    # differences 1, 2, 3: mean 2, s 1, t_{0.975, 2} = 4.3027; bound 4.3027 / sqrt(3) = 2.484
    assert one_sided_bound(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)) == pytest.approx(2.4841, abs=1e-4)
    assert not TermAudit("t", 2.0, 0.0, 0.0, 2.0, 2.4841, 3).violated
    assert TermAudit("t", 2.6, 0.0, 0.0, 2.6, 2.4841, 3).violated


def test_one_held_out_batch_is_not_measurable():
    audit = audit_term("t", estimator(), gaussian_pairs(4, seed=1), gaussian_pairs(1, seed=2), seed=0, steps=5)
    check = audit.check()
    assert check.state == "not measurable" and not check.failed


def test_the_runner_audits_final_seeds_on_validation_rows_and_records_the_checks(harness_run, monkeypatch):
    calls = []
    real = bound_audit.audit_method

    def spy(method, data, *args, **kwargs):
        calls.append((data.seed, len(data.train), len(data.held_out), data.batch_size))
        audits = real(method, data, *args, **kwargs)
        # The unique term forced violated, as an under-estimating estimator reads, to reach the leaderboard.
        audits[1] = TermAudit(audits[1].term, 2.0, 0.0, 0.0, 2.0, 0.1, 11)
        return audits

    monkeypatch.setattr(bound_audit, "audit_method", spy)
    # One tuning trial (lr tuned) and one final seed: the audit runs for the seed only.
    fixed = ["--set", "embed_dim=16", "--set", "factor_dim=8", "--set", "critic_hidden=16"]
    assert harness_run("--method", "factorcl-sup", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1",
                       *fixed) == 0
    task = TinySynthetic()
    data = task.load()
    assert calls == [(0, len(data.train), len(data.val), task.default_batch_size)]
    path = harness_run.results / "records" / "tiny-synthetic" / "factorcl-sup" / "seed0.json"
    record = json.loads(path.read_text())
    shared, unique = record["checks"]["audit_shared_club_given_y"], record["checks"]["audit_unique_club"]
    assert "fresh critic InfoNCE" in shared["detail"] and shared["measurable"]
    assert not unique["held"] and "is no upper bound" in unique["detail"]
    row = next(line for line in render(harness_run.results).splitlines() if line.startswith("| FactorCL-SUP"))
    assert CHECK_FAILED in row


@pytest.mark.parametrize("name", ["factorcl-sup", "factorcl-ssl"])
def test_factorcl_audits_each_club_term_on_the_pairs_its_critic_scores_in_training(name):
    from tests.test_factorcl import batch_of, build, replace_bounds

    method = build(name)
    batch = batch_of(method.task)
    torch.manual_seed(1)  # SSL's augmented views: the same draws for both
    audited = method._club_pairs(batch)
    replace_bounds(method, {"shared_club_given_y": 0.0, "unique_club": 0.0})
    torch.manual_seed(1)
    method.terms(batch)
    for term in ("shared_club_given_y", "unique_club"):
        seen = getattr(method, term).seen
        given = tuple(x for x in audited[term].args() if x is not None)  # the unconditional term takes two
        assert len(seen) == len(given)
        for s, g in zip(seen, given):
            assert torch.allclose(s, g, atol=1e-6)


def test_the_ablation_audits_only_the_club_term_its_objective_keeps(monkeypatch):
    from methods.common import bound_audit
    from tests.test_factorcl import build

    audited, controlled = {}, {}
    monkeypatch.setattr(bound_audit, "audit_method", lambda method, data, estimators, pairs: audited.update(
        {method.name: sorted(estimators)}) or [])
    monkeypatch.setattr(bound_audit, "null_controls", lambda method, data, estimators, pairs: controlled.update(
        {method.name: sorted(estimators)}) or [])
    names = ("factorcl-ssl", "factorcl-ssl-nocond", "factorcl-ssl-no-shared-cond", "factorcl-ssl-no-unique-cond")
    for name in names:
        build(name).audit(data=None)
    assert audited == {"factorcl-ssl": ["shared_club_given_y", "unique_club"], "factorcl-ssl-nocond": ["unique_club"],
                       "factorcl-ssl-no-shared-cond": ["unique_club"],
                       "factorcl-ssl-no-unique-cond": ["shared_club_given_y", "unique_club"]}
    # The null controls: each conditional term the objective keeps.
    assert controlled == {"factorcl-ssl": ["shared_club_given_y", "unique_nce_given_y"], "factorcl-ssl-nocond": [],
                          "factorcl-ssl-no-shared-cond": ["unique_nce_given_y"],
                          "factorcl-ssl-no-unique-cond": ["shared_club_given_y"]}


# -- the audit names its cause ---------------------------------------------------------------------------

MI_3_RHO = math.sqrt(1 - math.exp(-2 * 3.0 / DIM))  # four coordinate pairs of this correlation hold 3 nats
RECORDS_LR = 1e-4  # the low end of FactorCL's search range, where its CLUB critics train


def test_a_club_whose_critic_lagged_is_violated_and_says_the_critic_lagged():
    """A CLUB on Gaussian pairs holding 3 nats whose critic took 300 steps at the records' rate reads far below
    3; trained to convergence from fresh the same architecture bounds it, so the cause is the lag."""
    fit_on, held_out = gaussian_pairs(40, seed=1, rho=MI_3_RHO), gaussian_pairs(11, seed=2, rho=MI_3_RHO)
    club = estimator(seed=3)
    optimizer = torch.optim.Adam(club.parameters(), lr=RECORDS_LR)
    for step in range(300):
        loss = -club.critic_nce(*fit_on[step % len(fit_on)].args())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    audit = audit_term("unique_club", club, fit_on, held_out, seed=0)
    assert audit.violated, audit
    assert audit.converged_club > 3.0 - audit.converged_tolerance, audit  # an upper bound of the 3 nats again
    assert audit.cause == "the critic lagged" and "cause: the critic lagged" in audit.check().detail


class ShrunkCLUB(ConditionalCLUBBound):
    """An estimator whose CLUB form reads a fifth of NCE-CLUB: however well its critic trains, it cannot bound
    a term much above zero (its InfoNCE, what the critic trains on, is left as it is)."""

    def forward(self, a, b, c=None, weights=None):
        club, nce = super().forward(a, b, c, weights)
        return club / 5, nce


def test_an_estimator_that_cannot_bound_the_term_is_violated_and_says_so():
    fit_on, held_out = gaussian_pairs(40, seed=1, rho=MI_3_RHO), gaussian_pairs(11, seed=2, rho=MI_3_RHO)
    torch.manual_seed(3)
    club = trained(ShrunkCLUB(DIM, DIM, hidden=64), fit_on)
    audit = audit_term("unique_club", club, fit_on, held_out, seed=0)
    assert audit.violated and audit.converged_difference > audit.converged_tolerance, audit
    assert audit.cause == "the estimator cannot bound this term"
    assert "cause: the estimator cannot bound this term" in audit.check().detail


def test_a_bound_that_holds_names_no_cause():
    fit_on = gaussian_pairs(40, seed=1)
    audit = audit_term("unique_club", trained(estimator(seed=3), fit_on), fit_on, gaussian_pairs(11, seed=2), seed=0)
    assert not audit.violated and audit.cause is None and "cause" not in audit.check().detail


# -- null controls ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("level, distinguishable", [(0.0, False), (1.0, True)])
def test_a_conditional_term_reads_not_distinguishable_from_zero_unless_above_its_null_control(level,
                                                                                               distinguishable):
    from tests.test_conditional_null import gaussian, trained as trained_conditional

    design = gaussian(level, 1.0)
    nce, club = trained_conditional("residual", design, steps=300)
    generator = torch.Generator().manual_seed(7)
    held_out = [TermPairs(*design(generator, False)) for _ in range(bound_audit.HELD_OUT_BATCHES)]
    for estimator in (nce, club):
        control = bound_audit.null_control("unique_nce_given_y", estimator, held_out, seed=0)
        check = control.check()
        assert control.distinguishable == distinguishable, control
        assert check.name == "null_unique_nce_given_y" and "11 batches" in check.detail
        if distinguishable:
            assert check.state == "held" and "above its null control" in check.detail
        else:  # never a measured amount: not measurable, and it says why
            assert check.state == "not measurable" and "not distinguishable from 0" in check.detail
