"""CLIP-guided SimCLR's resampling, losses, guide measurement and method plumbing, each against its definition.

Fast (a few seconds): with the unit tests of tests/test_clip_guided.py these are what the module's mutants run
against (tests/mutation/methods.clip_guided_simclr.toml); that file's slow training and CLI tests are left out.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.api.method import InputModalities
from harness.api.task import Batch
from methods import clip_guided_simclr as cgs
from methods.clip_guided_simclr import (
    ClipGuidedSimCLR,
    GuideQuality,
    add_new_positive,
    drop_false_positive,
    dropped_negatives,
    dropped_pairs,
    guide_similarity,
    guided_nt_xent,
    linking_chance,
    measure_guide,
    negative_candidates,
    partners,
)
from methods.common.guides import GUIDE_SEED_OFFSET, EncoderGuide, TableGuide
from methods.common.losses import nt_xent_logits

CPU = torch.device("cpu")


def views(b: int, dim: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, dim, generator=g) for _ in range(4)]


def test_guide_similarity_is_the_cosine_of_every_pair_in_nt_xent_order():
    g1, g2, _, _ = views(5, 3, 0)
    g2 = 3 * g2  # cosine: the scale of an embedding plays no part
    sim = guide_similarity(g1, g2)
    both = torch.cat([g1, g2])
    expected = F.cosine_similarity(both[:, None], both[None, :], dim=2)
    assert sim.shape == (10, 10) and torch.allclose(sim, expected, atol=1e-6)


def test_partners_and_candidates_leave_out_exactly_the_view_and_its_partner():
    n = 4
    p = partners(n, CPU)
    assert p.tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    _, positives = nt_xent_logits(torch.randn(n, 2), torch.randn(n, 2), 1.0)
    assert torch.equal(p, positives)  # nt_xent_logits' own positives
    candidates = negative_candidates(p)
    rows = torch.arange(2 * n)
    assert candidates.sum().item() == 2 * n * (2 * n - 2)
    assert not candidates[rows, rows].any() and not candidates[rows, p].any()


def test_add_new_positive_is_the_mean_of_both_positives_terms_and_its_diagnostics_follow_their_definitions():
    z1, z2, g1, g2 = views(5, 4, 1)
    labels = torch.tensor([0, 1, 0, 1, 1])
    logits, positives = nt_xent_logits(z1, z2, 0.5)
    sim = guide_similarity(g1, g2)
    candidates = negative_candidates(positives)
    both = torch.cat([labels, labels])
    same = both[:, None] == both[None, :]
    loss, diag = add_new_positive(logits, positives, sim, candidates, same)
    for row in range(10):  # the neighbour: the most guide-similar candidate, found by looping
        allowed = [j for j in range(10) if j not in (row, int(positives[row]))]
        best = max(allowed, key=lambda j: float(sim[row, j]))
        term = (F.cross_entropy(logits[row:row + 1], positives[row:row + 1])
                + F.cross_entropy(logits[row:row + 1], torch.tensor([best])))
        if row == 0:
            neighbours, terms = [best], [term]
        else:
            neighbours.append(best)
            terms.append(term)
    assert torch.allclose(loss, torch.stack(terms).mean() / 2)
    rows = torch.arange(10)
    chosen = torch.tensor(neighbours)
    assert torch.allclose(diag["guide_positive_label_error"], (both[chosen] != both).float().mean())
    assert torch.allclose(diag["guide_positive_diversity"], (1 - sim[rows, chosen]).mean())
    assert torch.allclose(diag["augmentation_positive_diversity"], (1 - sim[rows, positives]).mean())


@pytest.mark.parametrize("fraction, k", [(0.0, 1), (0.2, 2), (0.25, 3), (0.5, 6)])
def test_dropped_negatives_rank_the_whole_row_of_2B_as_the_public_code(fraction, k):
    """k = max(1, int(fraction * 2B)) slots of each row's 2B similarities; the negatives among them are dropped."""
    _, _, g1, g2 = views(6, 3, 2)
    sim = guide_similarity(g1, g2)
    candidates = negative_candidates(partners(6, CPU))
    for most in (True, False):
        dropped = dropped_negatives(sim, candidates, fraction, most)
        order = sim.argsort(dim=1, descending=most)[:, :k]
        slots = torch.zeros_like(candidates).scatter_(1, order, True)
        assert torch.equal(dropped, slots & candidates)


def test_dropping_negatives_reports_their_same_class_share_beside_the_base_rate():
    z1, z2, g1, g2 = views(6, 4, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    both = torch.cat([labels, labels])
    same = both[:, None] == both[None, :]
    for variant, most in (("drop-false-negative", True), ("drop-easy-negative", False)):
        out = guided_nt_xent(z1, z2, g1, g2, labels, variant, 0.25, 0.2)
        dropped = dropped_negatives(guide_similarity(g1, g2), negative_candidates(partners(6, CPU)), 0.25, most)
        candidates = negative_candidates(partners(6, CPU))
        assert out["dropped_negative_same_class"] == same[dropped].float().mean()
        assert out["negative_same_class"] == pytest.approx(2 / 10)  # 2 of a view's 10 negatives share its class


@pytest.mark.parametrize("n, fraction, k", [(10, 0.1, 1), (10, 0.25, 2), (10, 0.35, 4), (4, 1.0, 3), (4, 0.0, 0)])
def test_dropped_pairs_are_the_lowest_round_fraction_n_keeping_one(n, fraction, k):
    pair_sim = torch.randn(n, generator=torch.Generator().manual_seed(n))
    dropped = dropped_pairs(pair_sim, fraction)
    assert dropped.sum() == k == min(round(fraction * n), n - 1)
    if k:
        assert pair_sim[dropped].max() < pair_sim[~dropped].min()


def test_drop_false_positive_averages_the_kept_rows_and_reports_the_dropped_pairs_diversity():
    z1, z2, g1, _ = views(5, 4, 4)
    g2 = g1.clone()
    g2[2] = -g1[2]  # pair 2 disagrees: cosine -1
    logits, positives = nt_xent_logits(z1, z2, 0.5)
    sim = guide_similarity(g1, g2)
    loss, diag = drop_false_positive(logits, positives, sim, 0.2)
    per_row = F.cross_entropy(logits, positives, reduction="none")
    kept = [0, 1, 3, 4, 5, 6, 8, 9]
    assert torch.allclose(loss, per_row[kept].mean())
    assert torch.allclose(diag["dropped_pair_diversity"], torch.tensor(2.0))
    assert torch.allclose(diag["augmentation_positive_diversity"], torch.tensor(2 / 5), atol=1e-6)
    _, none = drop_false_positive(logits, positives, sim, 0.0)
    assert none["dropped_pair_diversity"].isnan()


@pytest.mark.parametrize("variant", cgs.VARIANTS)
def test_guided_nt_xent_is_its_variants_loss_with_detached_diagnostics(variant):
    z1, z2, g1, g2 = views(6, 4, 6)
    z1.requires_grad_()
    labels = torch.tensor([0, 1, 1, 0, 2, 2])
    out = guided_nt_xent(z1, z2, g1, g2, labels, variant, 0.25, 0.3)
    logits, positives = nt_xent_logits(z1, z2, 0.3)
    sim, both = guide_similarity(g1, g2), torch.cat([labels, labels])
    same, candidates = both[:, None] == both[None, :], negative_candidates(positives)
    if variant == "add-new-positive":
        loss, diag = add_new_positive(logits, positives, sim, candidates, same)
    elif variant == "drop-false-positive":
        loss, diag = drop_false_positive(logits, positives, sim, 0.25)
    else:
        most = variant == "drop-false-negative"
        loss, diag = cgs.drop_negatives(logits, positives, sim, candidates, same, 0.25, most)
    assert set(out) == {"loss", *diag} and torch.allclose(out["loss"], loss) and out["loss"].requires_grad
    assert all(torch.allclose(out[k], v, equal_nan=True) and not out[k].requires_grad for k, v in diag.items())


def test_an_unknown_variant_is_named_with_the_choices():
    z1, z2, g1, g2 = views(3, 2, 5)
    with pytest.raises(HarnessError) as error:
        guided_nt_xent(z1, z2, g1, g2, torch.tensor([0, 1, 0]), "drop-all", 0.1, 0.1)
    assert str(error.value) == ("variant 'drop-all': choose one of add-new-positive, drop-false-negative, "
                                "drop-easy-negative, drop-false-positive")
    with pytest.raises(HarnessError) as error:
        ClipGuidedSimCLR(TASKS.get("shapes-superclasses-tiny")(), hparams(variant="drop-all"))
    assert str(error.value) == ("--set variant=drop-all: choose one of add-new-positive, drop-false-negative, "
                                "drop-easy-negative, drop-false-positive")


def test_the_gate_and_its_report_follow_the_binomial_definition():
    plain = GuideQuality(0.3, 0.2, 400)
    assert plain.measured == (0.3, 0.2)
    assert plain.gate(2.0) == pytest.approx(0.2 + 2 * math.sqrt(0.2 * 0.8 / 400))  # 24.0%
    check = plain.check(2.0)
    assert check.name == "guide_quality" and check.held and check.value == 0.3
    assert check.detail == ("the guide's nearest neighbour on augmented views shares the class 30.0% of the time "
                            "(chance 20.0%, gate 24.0% = chance + 2 sd, 400 rows)")
    failed = GuideQuality(0.23, 0.2, 400).check(2.0)
    assert not failed.held and failed.detail.endswith(
        "; below the gate: it links no more than a guide at chance might")
    assert GuideQuality(0.123456, 0.1, 400).check(2.0).value == 0.1235  # rounded to 4 places as recorded
    linked = GuideQuality(0.9, 0.25, 100, linking=0.123456, linking_chance=0.1)
    assert linked.measured == (0.123456, 0.1)
    gate = linked.gate(3.0)
    at_gate = GuideQuality(0.9, 0.25, 100, linking=gate, linking_chance=0.1)
    assert gate == pytest.approx(0.19)
    assert at_gate.check(3.0).held  # figure >= gate holds at equality
    control = linked.check(None)
    assert control.name == "guide_quality" and control.held and control.value == 0.1235
    assert control.detail == ("the guide's nearest neighbour on augmented views has its class and a different member "
                              "12.3% of the time (chance 10.0%, not gated: a control; same class 90.0%, chance "
                              "25.0%, 100 rows)")


def test_linking_chance_counts_other_rows_of_the_class_outside_the_member():
    labels = torch.tensor([0, 0, 0, 1, 1, 0])
    groups = torch.tensor([7, 7, 9, 3, 3, 9])
    brute = [sum(labels[j] == labels[i] and groups[j] != groups[i] for j in range(6) if j != i) / 5 for i in range(6)]
    assert linking_chance(labels, groups) == pytest.approx(float(sum(brute)) / 6)


def hparams(**extra):
    return {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, **ClipGuidedSimCLR.defaults, "guide_epochs": 1,
            **extra}


def brute_quality(table, task, train, batch, seed, groups):
    """The batches measure_guide draws (the same order generator), scored row by row from the definitions."""
    hits = linked = chance = views_ = 0
    for _, labels, rows in train.batches(batch, shuffle=True, generator=torch.Generator().manual_seed(seed)):
        if len(labels) < 2:
            continue
        g = torch.nn.functional.normalize(torch.cat([table[rows], table[rows]]), dim=1)
        both, member = torch.cat([labels, labels]), (torch.cat([groups[rows], groups[rows]]) if groups is not None
                                                     else None)
        m = len(both)
        for i in range(m):
            others = [j for j in range(m) if j not in (i, (i + m // 2) % m)]
            j = max(others, key=lambda j: float(g[i] @ g[j]))
            hits += int(both[j] == both[i])
            if member is not None:
                linked += int(both[j] == both[i] and member[j] != member[i])
            chance += sum(int(both[o] == both[i]) for o in others) / len(others)
        views_ += m
    return hits / views_, linked / views_, chance / views_, views_ // 2


@pytest.mark.parametrize("batch", [16, 10])  # 10: 48 rows leave a last batch of 8
def test_measure_guide_scores_the_batches_it_draws(batch):
    task = TASKS.get("shapes-superclasses-tiny")()
    train = task.load().train
    table = torch.randn(len(train), 6, generator=torch.Generator().manual_seed(9))
    groups = train.extras["member"]
    quality = measure_guide(TableGuide(table), task, train, "image", batch, 3, CPU)
    hits, linked, chance, rows = brute_quality(table, task, train, batch, 3, groups)
    assert quality.rows == rows == 48
    assert quality.same_class == pytest.approx(hits) and quality.linking == pytest.approx(linked)
    assert quality.base_rate == pytest.approx(chance, rel=1e-5)
    assert quality.linking_chance == linking_chance(train.labels, groups)
    captions = TASKS.get("shapes-captions-tiny")()  # no member groups: same class is the figure
    plain = measure_guide(TableGuide(table), captions, captions.load().train, "image", batch, 3, CPU)
    assert plain.linking is None and plain.linking_chance is None and plain.rows == 48


def test_measure_guide_stops_after_quality_rows_and_skips_single_row_batches(monkeypatch):
    task = TASKS.get("shapes-superclasses-tiny")()
    train = task.load().train
    table = torch.randn(len(train), 6, generator=torch.Generator().manual_seed(9))
    monkeypatch.setattr(cgs, "QUALITY_ROWS", 16)
    assert measure_guide(TableGuide(table), task, train, "image", 16, 3, CPU).rows == 16
    monkeypatch.setattr(cgs, "QUALITY_ROWS", 17)
    assert measure_guide(TableGuide(table), task, train, "image", 16, 3, CPU).rows == 32
    monkeypatch.setattr(cgs, "QUALITY_ROWS", 2048)
    odd = train.take(torch.arange(17))  # batches of 16 and 1: a batch of one row has no neighbour to find
    assert measure_guide(TableGuide(table[:17]), task, odd, "image", 16, 3, CPU).rows == 16


def test_the_method_prepares_its_guide_checks_it_and_computes_the_guided_loss():
    task = TASKS.get("shapes-superclasses-tiny")()
    train = task.load().train
    method = ClipGuidedSimCLR(task, hparams(guide="oracle", variant="drop-false-negative", guide_gate_sd=2.0))
    assert method.fraction == 0.05 and method.image == "image"
    assert method.check_assumptions([]) == []  # nothing measured yet, nothing claimed
    assert ClipGuidedSimCLR.input_modalities(task) == InputModalities(("image",), ("image",))  # captions stay out
    with pytest.raises(RuntimeError) as error:
        method.loss(None)
    assert str(error.value) == "prepare() builds the guide; the harness calls it before training"
    torch.manual_seed(0)
    method.prepare(train)
    assert torch.equal(method.guide.table, cgs.build_guide("oracle", task, train, {}, CPU).table)
    expected = measure_guide(method.guide, task, train, "image", 16, GUIDE_SEED_OFFSET, CPU)
    assert method.guide_quality == expected
    assert method.check_assumptions([]) == [expected.check(2.0)]
    method.hparams["guide_gate_sd"] = None
    assert method.check_assumptions([]) == [expected.check(None)]
    method.train()
    assert method.training and not method.guide.training
    inputs, labels, rows = next(train.batches(8))
    batch = Batch(inputs, labels, rows, augment=lambda m, x: x)  # identity views: both equal the inputs
    z = method.projector(method.encoders.joint(inputs))
    g = method.guide(inputs["image"], rows)
    expected_loss = guided_nt_xent(z, z, g, g, labels, "drop-false-negative", 0.05, method.hparams["temperature"])
    out = method.loss(batch)
    assert set(out) == set(expected_loss) and torch.allclose(out["loss"], expected_loss["loss"])
    assert ClipGuidedSimCLR(task, hparams(variant="drop-easy-negative", fraction=0.3)).fraction == 0.3
    assert ClipGuidedSimCLR(task, hparams(variant="add-new-positive")).fraction == 0.0


def test_a_table_guide_cannot_drop_false_positives_and_the_batch_size_defaults_to_the_tasks():
    task = TASKS.get("shapes-superclasses-tiny")()
    train = task.load().train
    with pytest.raises(HarnessError) as error:
        ClipGuidedSimCLR(task, hparams(guide="oracle", variant="drop-false-positive")).prepare(train)
    assert str(error.value) == ("drop-false-positive ranks augmentation pairs, which a table of precomputed "
                                "embeddings cannot tell apart; give a guide encoder (clip or module:...)")
    settings = hparams(guide="oracle")
    del settings["batch_size"]
    method = ClipGuidedSimCLR(task, settings)
    torch.manual_seed(0)
    method.prepare(train)
    expected = measure_guide(method.guide, task, train, "image", task.default_batch_size, GUIDE_SEED_OFFSET, CPU)
    assert method.guide_quality == expected
    assert METHODS.get("cgs-drop-false-positive").defaults["variant"] == "drop-false-positive"


def pixel_mean():
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def test_the_guide_is_built_from_the_methods_recipe_and_embeds_both_views(monkeypatch):
    task = TASKS.get("shapes-superclasses-tiny")()
    train = task.load().train
    calls = []
    monkeypatch.setattr(cgs, "build_guide", lambda *a: calls.append(a) or EncoderGuide(pixel_mean()))
    method = ClipGuidedSimCLR(task, hparams(guide="module:x", guide_epochs=3, guide_lr=0.02, guide_embed_dim=7,
                                            batch_size=12))
    method.prepare(train)
    (spec, given_task, given_train, recipe, device), = calls
    assert (spec, given_task, given_train, device) == ("module:x", task, train, CPU)
    assert recipe == {"epochs": 3, "lr": 0.02, "embed_dim": 7, "batch_size": 12}
    del method.hparams["guide_gate_sd"]  # absent: the default gate
    assert method.check_assumptions([]) == [method.guide_quality.check(cgs.GUIDE_GATE_SD)]
    # Each view is embedded by the guide: views that differ give guide similarities that differ.
    inputs, labels, rows = next(train.batches(8))
    inputs = {"image": inputs["image"]}  # the student's only modality
    shift = iter([0.0, 1.0])
    batch = Batch(inputs, labels, rows, augment=lambda m, x: x + next(shift) * torch.arange(8.0)[:, None, None, None])
    v1 = {"image": inputs["image"]}
    v2 = {"image": inputs["image"] + torch.arange(8.0)[:, None, None, None]}
    z1, z2 = (method.projector(method.encoders.joint(v)) for v in (v1, v2))
    g1, g2 = (method.guide(v["image"], rows) for v in (v1, v2))
    expected = guided_nt_xent(z1, z2, g1, g2, labels, method.variant, method.fraction, method.hparams["temperature"])
    assert torch.allclose(method.loss(batch)["loss"], expected["loss"])
