"""shapes-superclasses version 3: an image-only target, a disjoint caption pool for the guide, a stated class-word
rate, several assignments, and records that say what the guide saw (tasks/superclasses.py, methods/common/guides.py).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.api.method import InputModalities
from harness.running.grouped import heldout_folds
from methods.common import guides
from tasks.common.image_augment import PAD_ID
from tasks.superclasses import (
    ASSIGNMENTS,
    LOOK_ALIKES,
    SHAPES,
    SUPERCLASS_NAMES,
    SUPERCLASS_WORDS,
    ShapeSuperclasses,
    SuperclassSetting,
    vocabulary,
)

CPU = torch.device("cpu")
SMALL = SuperclassSetting(n_train=120, n_val=40, n_test=40, size=16, pool_size=200)


def target(setting: SuperclassSetting = SMALL) -> ShapeSuperclasses:
    task = ShapeSuperclasses()
    task.setting = setting
    return task


def rows(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_no_target_image_is_in_the_pool():
    """Every target row (train, val, test) against every pool row, compared exactly, byte for byte."""
    task = target()
    data, pool = task.load(), task.guide_pool().load().train
    own = set().union(*(rows(split.inputs["image"]) for split in (data.train, data.val, data.test)))
    assert len(own) == 200 and len(rows(pool.inputs["image"])) == SMALL.pool_size  # no row repeats within either
    assert not own & rows(pool.inputs["image"])
    # The pool is its own: another pool seed draws other images, and the target's seed does not move the pool.
    other = target(replace(SMALL, pool_seed=2)).guide_pool().load().train
    assert not rows(other.inputs["image"]) & rows(pool.inputs["image"])
    moved = target(replace(SMALL, seed=5)).guide_pool().load().train
    assert torch.equal(moved.inputs["image"], pool.inputs["image"])


def test_the_target_has_no_caption_and_the_guide_reads_captions_only_from_the_pool(monkeypatch):
    """No caption of the target exists, so none can enter a student's or a guide's training; the CLIP guide is
    handed the pool's rows (captions included), never the target's."""
    task = TASKS.get("shapes-superclasses-tiny")()
    data = task.load()
    assert [m.name for m in task.modalities] == ["image"]
    assert all(set(split.inputs) == {"image"} for split in (data.train, data.val, data.test))
    given = []
    monkeypatch.setattr(guides, "trained_clip_image_encoder",
                        lambda *args: given.append(args) or torch.nn.Flatten())
    for name in ("cgs-add-new-positive", "guide-encoder"):
        cls = METHODS.get(name)
        method = cls(task, cls.defaults | {"batch_size": 16})
        method.prepare(data.train)
        source, split, *_ = given[-1]
        assert source.name == "shapes-superclasses-pool" and set(split.inputs) == {"image", "caption"}
        assert not rows(split.inputs["image"]) & rows(data.train.inputs["image"])
        notes = method.record_notes()
        assert notes["guide_training_data"].startswith("the guide pool shapes-superclasses-pool, drawn apart")
        assert "48 generated image-caption pairs" in notes["guide_training_data"]
        assert "(seed 1)" in notes["guide_training_data"]
        assert notes["guide_pool_members"].endswith("of every one the probe holds out")
    assert METHODS.get("guide-encoder").input_modalities(task) == InputModalities(("image",), ("image",))


def named_share(setting: SuperclassSetting) -> tuple[int, int]:
    """(pool captions naming a superclass word or synonym, pool rows); every named word is the row's own class."""
    task = target(setting).guide_pool()
    _, captions, members = task.generate()
    words = vocabulary()
    assert not set(words) & set(SHAPES)  # no caption can name the member shape: the vocabulary lacks them
    named = 0
    for ids, member in zip(captions, members.tolist()):
        caption = {words[i] for i in ids.tolist() if i != PAD_ID}
        own = set(SUPERCLASS_WORDS[SUPERCLASS_NAMES[member // 3]])
        assert not caption & ({w for pair in SUPERCLASS_WORDS.values() for w in pair} - own)
        named += bool(caption & own)
    return named, len(members)


@pytest.mark.parametrize("name", ["shapes-superclasses-class-words-0", "shapes-superclasses-class-words-32",
                                  "shapes-superclasses-class-words-63", "shapes-superclasses"])
def test_the_pools_class_word_rate_is_the_settings_within_a_binomial_bound(name):
    """Each caption names its class independently with p = class_word_rate, so the count is Binomial(n, p).
    Hoeffding: P(|share - p| >= t) <= 2 exp(-2 n t^2); t = sqrt(ln(2 / delta) / (2 n)) with delta = 1e-6 is the
    bound a correct generator leaves with probability below one in a million (n = 2000: t = 0.060, against
    rates 0.31 apart). At p = 0 the bound is exact: no caption names a class."""
    rate = TASKS.get(name).setting.class_word_rate
    named, n = named_share(replace(SMALL, size=8, pool_size=2000, class_word_rate=rate))
    bound = math.sqrt(math.log(2 / 1e-6) / (2 * n))
    assert abs(named / n - rate) <= bound
    if rate == 0.0:
        assert named == 0


def test_the_dose_response_variants_differ_only_in_the_pools_text():
    """The same target rows and the same pool images at every rate; only the captions change."""
    names = ["shapes-superclasses", "shapes-superclasses-class-words-63", "shapes-superclasses-class-words-32",
             "shapes-superclasses-class-words-0"]
    rates = [TASKS.get(n).setting.class_word_rate for n in names]
    assert rates == sorted(rates, reverse=True) and rates[-1] == 0.0 and len(set(rates)) == 4
    small = [target(replace(SMALL, class_word_rate=r)) for r in rates]
    first, first_pool = small[0].load().train, small[0].guide_pool().generate()
    for task in small[1:]:
        data, (images, captions, members) = task.load().train, task.guide_pool().generate()
        assert torch.equal(data.inputs["image"], first.inputs["image"]) and torch.equal(data.labels, first.labels)
        assert np.array_equal(images, first_pool[0]) and np.array_equal(members, first_pool[2])
        assert not np.array_equal(captions, first_pool[1])
    for name in names[1:]:  # the registered variants change nothing else
        assert replace(TASKS.get(name).setting, class_word_rate=0.95) == ShapeSuperclasses.setting


def test_every_assignment_splits_the_look_alikes_and_they_are_distinct_partitions():
    partitions = []
    for number, classes in ASSIGNMENTS.items():
        assert len(classes) == len(SUPERCLASS_NAMES) and all(len(members) == 3 for members in classes)
        assert sorted(s for members in classes for s in members) == sorted(SHAPES)  # each shape exactly once
        superclass = {s: c for c, members in enumerate(classes) for s in members}
        apart = [superclass[a] != superclass[b] for a, b in LOOK_ALIKES]
        assert all(apart), (number, [pair for pair, ok in zip(LOOK_ALIKES, apart) if not ok])
        partitions.append(frozenset(frozenset(members) for members in classes))
    assert len(ASSIGNMENTS) >= 3 and len(set(partitions)) == len(partitions)
    registered = {TASKS.get(name).setting.assignment for name in
                  ("shapes-superclasses", "shapes-superclasses-assignment-2", "shapes-superclasses-assignment-3")}
    assert registered == set(ASSIGNMENTS)


def shape_of(assignment: int, members: torch.Tensor) -> list[str]:
    return [ASSIGNMENTS[assignment][m // 3][m % 3] for m in members.tolist()]


@pytest.mark.parametrize("assignment", sorted(ASSIGNMENTS))
def test_labels_members_and_held_out_folds_follow_the_assignment(assignment):
    """The same images under every assignment; a row's member names the same drawn shape in each, its label is
    that shape's superclass there, and fold k holds out the k-th member the assignment lists in every class."""
    base = target(replace(SMALL, assignment=1)).load()
    data = target(replace(SMALL, assignment=assignment)).load()
    for split, reference in zip((data.train, data.val, data.test), (base.train, base.val, base.test)):
        assert torch.equal(split.inputs["image"], reference.inputs["image"])
        members = split.extras["member"]
        assert shape_of(assignment, members) == shape_of(1, reference.extras["member"])
        assert torch.equal(split.labels, members // 3)
    folds = heldout_folds(data.train.labels.numpy(), data.train.extras["member"].numpy())
    held = [sorted(ASSIGNMENTS[assignment][c][k] for c in range(4)) for k in range(3)]
    assert [sorted(shape_of(assignment, torch.from_numpy(fold))) for fold in folds] == held


def test_a_bad_setting_is_refused_in_one_line():
    with pytest.raises(HarnessError, match=r"superclass assignment 9: choose one of \[1, 2, 3\]"):
        SuperclassSetting(assignment=9)
    with pytest.raises(HarnessError, match="class_word_rate 1.5: a share of captions, between 0 and 1"):
        SuperclassSetting(class_word_rate=1.5)


def test_the_guide_encoder_probes_the_guided_rows_guide_and_refuses_a_table(monkeypatch):
    task = TASKS.get("shapes-superclasses-tiny")()
    train = task.load().train
    monkeypatch.setattr(guides, "_TRAINED", {})
    hparams = {"batch_size": 16, "guide_epochs": 1}
    torch.manual_seed(0)
    guided = METHODS.get("cgs-add-new-positive")(task, METHODS.get("cgs-add-new-positive").defaults | hparams)
    guided.prepare(train)
    torch.manual_seed(0)
    probe = METHODS.get("guide-encoder")(task, METHODS.get("guide-encoder").defaults | hparams)
    assert not probe.trains
    probe.prepare(train)
    images = train.inputs["image"][:5]
    assert torch.equal(probe.encode({"image": images}), guided.guide.encoder(images))  # the seed's one guide
    assert probe.record_notes() == guided.record_notes() and not any(p.requires_grad for p in probe.parameters())
    # What a saved encoder of the row holds loads into a fresh one (harness.running.saved_encoders reads it so).
    fresh = METHODS.get("guide-encoder")(task, METHODS.get("guide-encoder").defaults | hparams)
    assert not fresh.load_state_dict(probe.state_dict(), strict=False).missing_keys
    assert torch.equal(fresh.eval().encode({"image": images}), probe.encode({"image": images}))
    oracle = METHODS.get("guide-encoder")(task, METHODS.get("guide-encoder").defaults | {"guide": "oracle"})
    with pytest.raises(HarnessError, match="guide-encoder: guide oracle is a table of training-row embeddings"):
        oracle.prepare(train)
