"""CLIP-guided SimCLR: each variant's masks do what they claim, the guides load, and every image method runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.api.method import InputModalities
from harness.api.task import TaskData, TensorSplit
from harness.cli import main
from harness.running.environment import seed_everything
from harness.running.train import TrainConfig, extract_features, fit
from methods.clip_guided_simclr import (
    VARIANTS,
    ClipGuidedSimCLR,
    GuideQuality,
    dropped_negatives,
    linking_chance,
    dropped_pairs,
    guide_similarity,
    guided_nt_xent,
    measure_guide,
    negative_candidates,
)
from methods.common.guides import EncoderGuide, TableGuide
from methods.common.losses import nt_xent_logits

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
B, DIM = 6, 5


def tiny_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z1, z2 = torch.randn(B, DIM, generator=g), torch.randn(B, DIM, generator=g)
    g1, g2 = torch.randn(B, 8, generator=g), torch.randn(B, 8, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return z1.requires_grad_(), z2, g1, g2, labels


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_gives_a_finite_differentiable_loss(variant):
    z1, z2, g1, g2, labels = tiny_batch()
    out = guided_nt_xent(z1, z2, g1, g2, labels, variant, 0.25, 0.1)
    out["loss"].backward()
    assert out["loss"].isfinite() and z1.grad.abs().sum() > 0
    assert len(out) > 1 and all(not v.requires_grad for k, v in out.items() if k != "loss")


def test_add_new_positive_targets_the_guides_nearest_other_sample():
    z1, z2, g1, g2, labels = tiny_batch()
    # The guide sees three look-alike pairs of samples, (0, 3), (1, 4), (2, 5), each of two classes.
    cluster = F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 8).float()
    g1, g2 = cluster + 0.05 * g1, cluster + 0.05 * g2
    out = guided_nt_xent(z1, z2, g1, g2, labels, "add-new-positive", 0.0, 0.1)
    logits, positives = nt_xent_logits(z1, z2, 0.1)
    partner = torch.tensor([3, 4, 5, 0, 1, 2])
    # Each view's neighbour is the other sample's view with the higher guide similarity.
    sim = guide_similarity(g1, g2)
    rows = torch.arange(2 * B)
    first, second = torch.cat([partner, partner]), torch.cat([partner, partner]) + B
    neighbour = torch.where(sim[rows, first] >= sim[rows, second], first, second)
    expected = (F.cross_entropy(logits, positives) + F.cross_entropy(logits, neighbour)) / 2
    assert torch.allclose(out["loss"], expected)
    # labels 0,0,1,1,2,2: each look-alike pair spans two classes, so every chosen positive is wrong.
    assert out["guide_positive_label_error"] == 1.0


def test_add_new_positive_label_error_is_zero_when_the_guide_matches_classes():
    z1, z2, _, _, labels = tiny_batch()
    g = F.one_hot(labels, 3).float()
    out = guided_nt_xent(z1, z2, g + 0.01, g + 0.02, labels, "add-new-positive", 0.0, 0.1)
    assert out["guide_positive_label_error"] == 0.0


@pytest.mark.parametrize("most_similar", [True, False])
def test_dropped_negatives_are_the_extremes_and_never_the_positive(most_similar):
    _, _, g1, g2, _ = tiny_batch()
    g2 = g1 + 0.001 * g2  # every partner is the most similar candidate of all: it must still survive
    sim = guide_similarity(g1, g2)
    _, positives = nt_xent_logits(torch.randn(B, 2), torch.randn(B, 2), 1.0)
    candidates = negative_candidates(positives)
    dropped = dropped_negatives(sim, candidates, 0.34, most_similar)
    assert not dropped[torch.arange(2 * B), positives].any() and not dropped.diagonal().any()
    # k = int(0.34 * 12) = 4 of each row's 12 views; at the top, itself and its partner take two of them.
    assert (dropped.sum(1) == (2 if most_similar else 4)).all()
    for row in range(2 * B):
        kept = sim[row][candidates[row] & ~dropped[row]]
        gone = sim[row][dropped[row]]
        assert (gone.min() >= kept.max()) if most_similar else (gone.max() <= kept.min())


def public_false_negative_mask(sim: torch.Tensor, fraction: float) -> torch.Tensor:
    """The public code's rule, restated: mask every entry at or above the row's k-th largest, k = int(fraction * 2B)."""
    threshold = sim.topk(int(sim.shape[1] * fraction), dim=1).values[:, -1:]
    return sim >= threshold


def test_drop_false_negative_counts_k_as_the_public_code_does():
    """At B = 256 and 5%: k = int(0.05 * 512) = 25 slots, itself and its partner among them, so 23 negatives go."""
    g = torch.Generator().manual_seed(0)
    g1 = torch.randn(256, 16, generator=g)
    g2 = g1 + 0.01 * torch.randn(256, 16, generator=g)
    sim = guide_similarity(g1, g2)
    _, positives = nt_xent_logits(torch.randn(256, 2), torch.randn(256, 2), 1.0)
    candidates = negative_candidates(positives)
    dropped = dropped_negatives(sim, candidates, 0.05, most_similar=True)
    assert (dropped.sum(1) == 23).all()
    assert torch.equal(dropped, public_false_negative_mask(sim, 0.05) & candidates)


def test_drop_negative_variants_remove_exactly_the_masked_logits():
    z1, z2, g1, g2, labels = tiny_batch()
    for variant, most in (("drop-false-negative", True), ("drop-easy-negative", False)):
        out = guided_nt_xent(z1, z2, g1, g2, labels, variant, 0.34, 0.1)
        logits, positives = nt_xent_logits(z1, z2, 0.1)
        dropped = dropped_negatives(guide_similarity(g1, g2), negative_candidates(positives), 0.34, most)
        expected = F.cross_entropy(logits.masked_fill(dropped, float("-inf")), positives)
        assert torch.allclose(out["loss"], expected)
        assert not torch.allclose(out["loss"], F.cross_entropy(logits, positives))
        same = (torch.cat([labels, labels])[:, None] == torch.cat([labels, labels])[None, :])
        assert torch.allclose(out["dropped_negative_same_class"], same[dropped].float().mean())


def test_drop_false_positive_removes_the_lowest_similarity_pairs():
    z1, z2, g1, g2, labels = tiny_batch()
    g2 = g1.clone()
    g2[4] = -g1[4]  # pair 4's views disagree most, then pair 1's
    g2[1] = g1[1] + 2.0 * torch.randn(8, generator=torch.Generator().manual_seed(3))
    pair_sim = F.cosine_similarity(g1, g2)
    assert set(pair_sim.argsort()[:2].tolist()) == {4, 1}
    assert dropped_pairs(pair_sim, 2 / B).nonzero().flatten().tolist() == [1, 4]
    out = guided_nt_xent(z1, z2, g1, g2, labels, "drop-false-positive", 2 / B, 0.1)
    logits, positives = nt_xent_logits(z1, z2, 0.1)
    per_row = F.cross_entropy(logits, positives, reduction="none")
    kept = torch.tensor([0, 2, 3, 5, 6, 8, 9, 11])  # views of pairs 1 and 4 are rows 1, 4, 7, 10
    assert torch.allclose(out["loss"], per_row[kept].mean())
    # The dropped anchors' own terms are out: moving their partners toward them leaves the loss unchanged.
    z2_moved = z2.clone()
    z2_moved[4] = z1[4].detach()
    moved = guided_nt_xent(z1, z2_moved, g1, g2, labels, "drop-false-positive", 2 / B, 0.1)
    logits_m, _ = nt_xent_logits(z1, z2_moved, 0.1)
    assert torch.allclose(moved["loss"], F.cross_entropy(logits_m, positives, reduction="none")[kept].mean())


def test_drop_false_positive_always_keeps_one_pair():
    assert dropped_pairs(torch.tensor([0.1, 0.2]), 1.0).tolist() == [True, False]


def tiny_task():
    return TASKS.get("shapes-captions-tiny")()


def hparams(**extra):
    return {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, **ClipGuidedSimCLR.defaults, "guide_epochs": 1,
            **extra}


def test_precomputed_embeddings_are_looked_up_by_row(tmp_path):
    task = tiny_task()
    data = task.load()
    table = torch.randn(len(data.train), 4)
    np.save(tmp_path / "guide.npy", table.numpy())
    method = ClipGuidedSimCLR(task, hparams(guide=f"embeddings:{tmp_path / 'guide.npy'}"))
    method.prepare(data.train)
    rows = torch.tensor([5, 2, 9])
    assert torch.equal(method.guide(torch.zeros(3, 3, 16, 16), rows), table[rows])
    with pytest.raises(HarnessError, match="one row per training"):
        ClipGuidedSimCLR(task, hparams(guide=f"embeddings:{tmp_path / 'guide.npy'}")).prepare(data.val)
    with pytest.raises(HarnessError, match="cannot tell apart"):
        ClipGuidedSimCLR(task, hparams(guide=f"embeddings:{tmp_path / 'guide.npy'}",
                                       variant="drop-false-positive")).prepare(data.train)


def frozen_pixel_mean():
    """A module-path guide for the test: mean colour per channel, a crude but frozen image embedding."""
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def test_module_guide_embeds_the_augmented_views_and_stays_frozen():
    task = tiny_task()
    data = task.load()
    method = ClipGuidedSimCLR(task, hparams(guide="module:tests.test_clip_guided:frozen_pixel_mean"))
    history = fit(method, data, TrainConfig(1, 16, 1e-3, 0.0, torch.device("cpu"), progress=False),
                  torch.Generator().manual_seed(0)).history
    assert np.isfinite(history[0]["train_loss"]) and 0 <= history[0]["train_guide_positive_label_error"] <= 1
    assert not method.guide.training and not any(p.requires_grad for p in method.guide.parameters())


def test_harness_trained_clip_guide_is_reused_within_a_seed_and_leaves_the_rng_alone():
    task = tiny_task()
    data = task.load()
    torch.manual_seed(0)
    first = ClipGuidedSimCLR(task, hparams())
    first.prepare(data.train)
    after_first = torch.rand(1)
    torch.manual_seed(0)
    second = ClipGuidedSimCLR(task, hparams(variant="drop-easy-negative"))
    second.prepare(data.train)
    assert second.guide.encoder is first.guide.encoder  # trained once per seed: variants share their guide
    assert torch.equal(torch.rand(1), after_first)
    assert not first.guide.encoder.training


def test_guided_method_rejects_an_unknown_variant():
    with pytest.raises(HarnessError, match="add-new-positive"):
        ClipGuidedSimCLR(tiny_task(), hparams(variant="drop-everything"))


def with_captions(data: TaskData) -> TaskData:
    """The same splits with a caption column of padding added, for a task that has none."""
    def captioned(split: TensorSplit) -> TensorSplit:
        return TensorSplit(split.inputs | {"caption": torch.zeros(len(split), 12, dtype=torch.int64)}, split.labels,
                           split.extras)

    return TaskData(captioned(data.train), captioned(data.val), captioned(data.test))


def with_noise_captions(data: TaskData, seed: int = 1) -> TaskData:
    """The same splits with every caption replaced by random tokens."""
    g = torch.Generator().manual_seed(seed)

    def noisy(split: TensorSplit) -> TensorSplit:
        caption = split.inputs["caption"]
        noise = torch.randint(2, max(int(caption.max()), 2) + 1, caption.shape, generator=g)
        return TensorSplit(split.inputs | {"caption": noise}, split.labels, split.extras)

    return TaskData(noisy(data.train), noisy(data.val), noisy(data.test))


def train_then_encode(name: str, task, data: TaskData, **extra):
    cls = METHODS.get(name)
    seed_everything(0)
    method = cls(task, {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 16, **cls.defaults, **extra})
    history = fit(method, data, TrainConfig(2, 16, 1e-3, 0.0, torch.device("cpu"), progress=False),
                  torch.Generator().manual_seed(0)).history
    return history, extract_features(method, data.test, torch.device("cpu"))[0]


PIXEL_GUIDE = {"guide": "module:tests.test_clip_guided:frozen_pixel_mean"}
# Every guided row, each with a guide that reads no caption (the CLIP guide is trained on the captions, so
# its rows take a frozen module guide here: what is tested is that the student never reads them).
CAPTION_FREE = [
    ("simclr", {}),
    ("cgs-oracle-add-new-positive", {}),
    ("cgs-group-oracle-add-new-positive", {}),
    ("cgs-image-guide-add-new-positive", {"guide_epochs": 1}),
    ("cgs-random-guide-add-new-positive", {}),
    ("clip-guided-simclr", PIXEL_GUIDE),
    ("cgs-add-new-positive", PIXEL_GUIDE),
    ("cgs-drop-false-negative", PIXEL_GUIDE),
    ("cgs-drop-easy-negative", PIXEL_GUIDE),
    ("cgs-drop-false-positive", PIXEL_GUIDE),
]


def test_the_caption_test_covers_every_guided_row():
    guided = {name for name in METHODS.names() if issubclass(METHODS.get(name), ClipGuidedSimCLR)}
    assert guided <= {name for name, _ in CAPTION_FREE}


@pytest.mark.parametrize("name, extra", CAPTION_FREE, ids=[name for name, _ in CAPTION_FREE])
def test_image_only_students_never_read_the_caption(name, extra):
    """Noise in place of every caption: the same losses, step by step, and the same features. On a task that
    has captions and no guide pool (shapes-superclasses has no caption at all: tests/test_guide_pool.py); the
    group oracle, which needs member groups that task lacks, reads only the groups (tests/test_guides.py)."""
    task = TASKS.get("shapes-captions-tiny" if name != "cgs-group-oracle-add-new-positive"
                     else "shapes-superclasses-tiny")()
    data = task.load()
    if "caption" not in data.train.inputs:  # the image-only target: give it noise captions of its own to ignore
        data = with_captions(data)
    assert METHODS.get(name).input_modalities(task) == InputModalities(("image",), ("image",))
    history, features = train_then_encode(name, task, data, **extra)
    noisy_history, noisy_features = train_then_encode(name, task, with_noise_captions(data), **extra)
    assert history == noisy_history and np.array_equal(features, noisy_features)
    assert features.shape[1] == METHODS.get(name).defaults["embed_dim"]


def with_permuted_labels(data: TaskData, seed: int = 2) -> TaskData:
    """The same splits with the training labels shuffled among the rows (member groups left as they are)."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    train = data.train
    return TaskData(TensorSplit(train.inputs, train.labels[order], train.extras), data.val, data.test)


def losses(history):
    return [epoch["train_loss"] for epoch in history]  # the diagnostics read the labels; the loss must not


LABEL_FREE = [("cgs-add-new-positive", {"guide_epochs": 1})] + [
    (name, extra) for name, extra in CAPTION_FREE if name != "cgs-oracle-add-new-positive"]


@pytest.mark.parametrize("name, extra", LABEL_FREE, ids=[f"{n}-{e.get('guide', 'own')}" for n, e in LABEL_FREE])
def test_non_oracle_guides_never_read_the_labels(name, extra):
    """Training labels permuted: every guide but the label oracle gives the same losses, step by step."""
    task = TASKS.get("shapes-superclasses-tiny")()
    data = task.load()
    history, features = train_then_encode(name, task, data, **extra)
    permuted, permuted_features = train_then_encode(name, task, with_permuted_labels(data), **extra)
    assert losses(history) == losses(permuted) and np.array_equal(features, permuted_features)


def test_the_label_oracle_does_read_the_labels():
    """The permutation test can fail: the one guide built from the labels changes its losses."""
    task = TASKS.get("shapes-superclasses-tiny")()
    data = task.load()
    history, _ = train_then_encode("cgs-oracle-add-new-positive", task, data)
    permuted, _ = train_then_encode("cgs-oracle-add-new-positive", task, with_permuted_labels(data))
    assert losses(history) != losses(permuted)


def test_clip_trains_on_captions_but_is_probed_on_its_image_encoder():
    task = tiny_task()
    data = task.load()
    history, features = train_then_encode("clip", task, data)
    noisy_history, _ = train_then_encode("clip", task, with_noise_captions(data))
    assert history != noisy_history  # the captions are what CLIP learns from
    cls = METHODS.get("clip")
    seed_everything(0)
    clip = cls(task, cls.defaults)
    clean = extract_features(clip, data.test, torch.device("cpu"))[0]
    assert np.array_equal(clean, extract_features(clip, with_noise_captions(data).test, torch.device("cpu"))[0])
    assert clean.shape[1] == cls.defaults["embed_dim"]


def test_simclr_keeps_every_modality_on_tasks_without_images():
    task = TASKS.get("tiny-synthetic")()
    names = tuple(m.name for m in task.modalities)
    assert METHODS.get("simclr").input_modalities(task) == InputModalities(names, names)


def test_a_declared_modality_the_task_lacks_is_unmet():
    task = tiny_task()
    assert InputModalities(("image",), ("image",)).unmet(task) is None
    assert InputModalities(("image", "audio"), ("image",)).unmet(task) == "needs modality audio"
    assert InputModalities((), ()).unmet(task) is not None


def random_features():
    """A module-path guide for the test: a fixed random projection that knows nothing of the classes."""
    torch.manual_seed(123)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 8))


def test_guide_quality_separates_the_oracle_from_chance(monkeypatch):
    task = TASKS.get("shapes-superclasses-tiny")()
    data = task.load()
    device = torch.device("cpu")
    labels = data.train.labels
    oracle = TableGuide(torch.nn.functional.one_hot(labels, 4).float() + 1e-3 * torch.randn(len(labels), 4))
    perfect = measure_guide(oracle, task, data.train, "image", 16, 0, device)
    assert perfect.same_class == 1.0 and perfect.rows == len(data.train)
    # Measured on part of the split, the guide must still be looked up by each row's place in the whole split.
    monkeypatch.setattr("methods.clip_guided_simclr.QUALITY_ROWS", 20)
    part = measure_guide(oracle, task, data.train, "image", 16, 0, device)
    assert part.same_class == 1.0 and part.rows == 32
    # The chance rate for exactly the batches it drew (the same order generator, the same rows): a view of a
    # class with m members in a batch of B has 2m - 2 same-class candidates among 2B - 2 (itself and its partner
    # are no candidates). Each batch's rates are summed in float32, 32 terms <= 1: a relative 32 eps32 = 4e-6.
    expected = []
    for _, batch_labels, _ in data.train.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)):
        members = [int(y) for y in batch_labels]
        expected += [(2 * members.count(y) - 2) / (2 * len(members) - 2) for y in members] * 2
    assert perfect.base_rate == pytest.approx(sum(expected) / len(expected), rel=1e-5)
    blind = measure_guide(EncoderGuide(random_features()), task, data.train, "image", 16, 0, device)
    # A fixed random projection of the pixels knows nothing of the classes: at chance it scores the base rate
    # with a binomial sd of at most sqrt(1/4 / 48) = 0.072 over the 48 rows (a row's two views are not
    # independent, so rows, not views, count); 5 sd above it fails only a measurement that reads the labels.
    assert blind.same_class < blind.base_rate + 5 * np.sqrt(0.25 / blind.rows)
    before = torch.rand(1)
    torch.manual_seed(0)
    first = torch.rand(1)
    torch.manual_seed(0)
    measure_guide(oracle, task, data.train, "image", 16, 0, device)
    assert torch.equal(torch.rand(1), first) and not torch.equal(before, first)  # the run's RNG is left alone


def test_a_guide_below_the_gate_fails_its_check_with_the_figure():
    """Without member groups the gate reads the same-class share, relative to its chance rate."""
    gate = 0.24 + 3 * np.sqrt(0.24 * 0.76 / 2048)  # 26.8%
    low, high = GuideQuality(0.26, 0.24, 2048).check(3.0), GuideQuality(0.28, 0.24, 2048).check(3.0)
    assert GuideQuality(0.26, 0.24, 2048).gate(3.0) == pytest.approx(gate)
    assert not low.held and low.value == 0.26 and "26.0%" in low.detail and "chance 24.0%" in low.detail
    assert "gate 26.8%" in low.detail and high.held and high.value == 0.28


def test_the_linking_gate_is_chance_plus_three_binomial_sds():
    """4 classes of 3 equal members: a random other row links with chance 2/12; at 2048 rows the gate is 19.1%."""
    groups = torch.arange(12).repeat_interleave(500)
    chance = linking_chance(groups // 3, groups)
    assert chance == pytest.approx(1000 / 5999)
    quality = GuideQuality(0.95, 0.25, 2048, linking=0.19, linking_chance=1 / 6)
    assert quality.gate(3.0) == pytest.approx(1 / 6 + 3 * np.sqrt((1 / 6) * (5 / 6) / 2048))
    assert round(100 * quality.gate(3.0), 1) == 19.1
    below = quality.check(3.0)  # 95% same class, but nearly all of it the same member: no linking
    assert not below.held and below.value == 0.19 and "same class 95.0%" in below.detail
    assert GuideQuality(0.5, 0.25, 2048, linking=0.20, linking_chance=1 / 6).check(3.0).held
    control = GuideQuality(1.0, 0.25, 2048, linking=0.0, linking_chance=1 / 6).check(None)
    assert control.held and "not gated" in control.detail and control.value == 0.0


def test_linking_separates_the_label_oracle_from_the_group_oracle():
    task = TASKS.get("shapes-superclasses-tiny")()
    data = task.load()
    members = data.train.extras["member"]
    device = torch.device("cpu")
    by_class = measure_guide(TableGuide(torch.nn.functional.one_hot(data.train.labels, 4).float()
                                        + 1e-3 * torch.randn(len(members), 4)), task, data.train, "image", 16, 0, device)
    by_member = measure_guide(TableGuide(torch.nn.functional.one_hot(members, 12).float()
                                         + 1e-3 * torch.randn(len(members), 12)), task, data.train, "image", 16, 0,
                              device)
    assert by_class.same_class == 1.0 and by_class.linking > by_class.linking_chance
    # Near-duplicates only: it links a view to another member only where its own member has no other row in the
    # batch (16 rows, 12 members), however often the neighbour "shares the class". So its linking share is at
    # most the share of views whose member is alone in the batches it drew (the same order generator), exactly.
    # Such a view's neighbour is any other row (the table is orthogonal across members), which links with about
    # the chance rate: the expectation is about alone share x chance, a quarter of chance here; 0.5 x chance is
    # a margin of twice that, not a derived bound.
    alone = []
    for _, _, rows in data.train.batches(16, shuffle=True, generator=torch.Generator().manual_seed(0)):
        batch_members = members[rows].tolist()
        alone += [batch_members.count(m) == 1 for m in batch_members] * 2
    alone_share = sum(alone) / len(alone)
    assert by_member.linking <= alone_share, (by_member, alone_share)
    assert by_member.linking < 0.5 * by_member.linking_chance and by_member.same_class > by_member.base_rate


def test_prepared_guides_carry_their_quality_check():
    task = TASKS.get("shapes-superclasses-tiny")()
    data = task.load()
    cls = METHODS.get("cgs-oracle-add-new-positive")
    method = cls(task, hparams(guide="oracle"))
    assert method.check_assumptions([]) == []  # nothing measured yet, nothing claimed
    method.prepare(data.train)
    (check,) = method.check_assumptions([])
    # Its neighbour always has the class; the share with another member is the figure gated.
    assert check.name == "guide_quality" and check.held and 0.3 < check.value < 1.0
    assert "same class 100.0%" in check.detail


IMAGE_METHODS = ["simclr", "clip-guided-simclr", "cgs-add-new-positive", "cgs-drop-false-negative",
                 "cgs-drop-easy-negative", "cgs-drop-false-positive", "cgs-oracle-add-new-positive",
                 "cgs-group-oracle-add-new-positive", "cgs-image-guide-add-new-positive",
                 "cgs-random-guide-add-new-positive"]


def test_cli_runs_every_image_method_and_records_each_guides_quality(tmp_path):
    """One `harness run` over SimCLR and every guided row, hyperparameters fixed as the record runs fix them:
    each gets an ok record with its table name, and every guided record carries its guide's quality check."""
    code = main(["run", "--method", ",".join(IMAGE_METHODS), "--task", "shapes-superclasses-tiny", "--trials", "1",
                 "--epochs", "1", "--seeds", "1", "--set", "batch_size=16", "--set", "lr=0.001",
                 "--set", "temperature=0.1", "--set", "embed_dim=64",
                 "--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"), "--no-progress",
                 "--allow-dirty"])
    assert code == 0
    records = {}
    for path in (tmp_path / "results" / "records").rglob("*.json"):
        record = json.loads(path.read_text())
        records[record["method"]["name"]] = record
    assert sorted(records) == sorted(IMAGE_METHODS)
    for name, record in records.items():
        assert record["status"] == "ok" and 0.0 <= record["metrics"]["test_acc"] <= 1.0
        assert 0.0 <= record["metrics"]["heldout_group_acc"] <= 1.0 and "heldout_group_knn" in record["metrics"]
        assert record["task"]["main_score"] == "heldout_group_acc"
        assert record["method"]["display_name"] == METHODS.get(name).display_name
        assert record["protocol"]["trials"] == 0 and record["hparams"]["temperature"] == 0.1
        if name == "simclr":
            assert record["checks"] == {} and record["notes"] == {}
            continue
        trained_guide = record["hparams"]["guide"] in ("clip", "simclr")
        # What the guide was built from: the task's pool for a trained guide, which held every member.
        assert record["notes"]["guide_training_data"].startswith("the guide pool ") == trained_guide
        assert ("guide_pool_members" in record["notes"]) == trained_guide
        check = record["checks"]["guide_quality"]
        assert 0.0 <= check["value"] <= 1.0 and "different member" in check["detail"]
        gated = record["hparams"]["guide_gate_sd"] is not None
        assert ("not gated" in check["detail"]) != gated
    assert records["cgs-drop-false-positive"]["hparams"]["variant"] == "drop-false-positive"
    assert records["cgs-oracle-add-new-positive"]["checks"]["guide_quality"]["held"]
    group_control = records["cgs-group-oracle-add-new-positive"]["checks"]["guide_quality"]
    assert group_control["value"] < 0.1 and group_control["held"]  # a view links only where its member is alone


def test_cli_runs_the_guide_encoder_row_with_its_guides_notes(tmp_path):
    """The reference row that probes the guide's frozen image encoder: no epochs of its own, the guide's notes."""
    code = main(["run", "--method", "guide-encoder", "--task", "shapes-superclasses-tiny", "--trials", "1",
                 "--seeds", "1", "--set", "guide_epochs=1", "--set", "guide_embed_dim=16",
                 "--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"), "--no-progress",
                 "--allow-dirty"])
    assert code == 0
    (path,) = (tmp_path / "results" / "records").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "ok" and record["protocol"]["epochs"] == 0 and record["hparams"]["guide"] == "clip"
    assert 0.0 <= record["metrics"]["heldout_group_acc"] <= 1.0
    assert record["notes"]["guide_training_data"].startswith("the guide pool shapes-superclasses-pool")


def documented_runs() -> list[list[str]]:
    """Each `harness run` command in docs/clip_guided.md, as argument lists."""
    import re
    import shlex

    text = (Path(__file__).resolve().parent.parent / "docs" / "clip_guided.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip().startswith("harness run"):
                commands.append(shlex.split(command)[2:])
    return commands


def test_the_documented_record_runs_are_valid_and_tune_nothing():
    """The docs' commands name real methods and keys, and fix every hyperparameter: rows differ only in the guide."""
    from harness.api.space import parse_overrides
    from harness.cli.commands import plan
    from harness.running.pair import resolve_hyperparameters

    runs = documented_runs()
    assert len(runs) == 8  # the version-3 runs (the version-2 commands are shown as text: `clip` no longer runs)
    for args in runs:
        methods = args[args.index("--method") + 1].split(",")
        tasks = args[args.index("--task") + 1].split(",")
        overrides = parse_overrides([args[i + 1] for i, a in enumerate(args) if a == "--set"])
        pairs, skipped = plan(methods, tasks, None)
        assert not skipped and len(pairs) == len(methods) * len(tasks)
        for pair in pairs:
            space, fixed = resolve_hyperparameters(pair, overrides)
            assert space == {} and fixed["lr"] == 0.001
