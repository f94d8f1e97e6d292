"""The guides of CLIP-guided SimCLR (methods/common/guides.py), each against what the module's docstring says it is.

Fast (a few seconds): these are the tests the module's mutants run against (tests/mutation/methods.common.guides.toml).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.api.task import TaskData
from harness.running.train import TrainConfig, fit
from methods.common import guides
from methods.common.encoders import ModalityEncoders
from methods.common.guides import (
    GUIDE_SEED_OFFSET,
    EncoderGuide,
    TableGuide,
    build_guide,
    image_modality,
    label_oracle_table,
    load_factory,
    load_table,
    member_groups,
)

CPU = torch.device("cpu")
RECIPE = {"epochs": 1, "lr": 1e-3, "embed_dim": 8, "batch_size": 16}


def superclasses():
    task = TASKS.get("shapes-superclasses-tiny")()
    return task, task.load().train


def scaled_sum():
    """A module-path factory for the tests: an untrained, trainable module (the guide must freeze it)."""
    torch.manual_seed(5)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4), torch.nn.BatchNorm1d(4))


def test_an_encoder_guide_embeds_the_views_with_its_frozen_encoder():
    encoder = scaled_sum()
    guide = EncoderGuide(encoder)
    images = torch.randn(5, 3, 16, 16)
    assert guide.per_view and not guide.encoder.training
    assert not any(p.requires_grad for p in guide.parameters())
    # Frozen in eval mode: batch-norm uses its running statistics, so a row's embedding ignores the other rows.
    alone = guide(images[:1], torch.tensor([0]))
    assert torch.allclose(guide(images, torch.arange(5))[:1], alone, atol=1e-6)
    assert torch.equal(guide(images, torch.tensor([4, 3, 2, 1, 0])), encoder(images))  # rows play no part


def test_a_table_guide_looks_rows_up_and_ignores_the_images():
    table = torch.arange(12, dtype=torch.int64).view(6, 2)
    guide = TableGuide(table)
    rows = torch.tensor([5, 0, 3])
    out = guide(torch.randn(3, 3, 16, 16), rows)
    assert not guide.per_view and out.dtype == torch.float32 and torch.equal(out, table[rows].float())
    assert "table" in dict(guide.named_buffers())  # moves with .to(device), never trained


@pytest.mark.parametrize("seed", [0, 1])
def test_the_label_oracle_table_is_one_hot_labels_with_a_little_seeded_noise(seed):
    labels = torch.tensor([2, 0, 2, 1, 0, 1])
    table = label_oracle_table(labels, seed)
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert table.shape == (6, 3) and torch.equal(table.argmax(1), labels)
    noise = table - one_hot
    assert 0 < noise.abs().max() < 1e-2 and torch.equal(table, label_oracle_table(labels, seed))
    assert not torch.equal(table, label_oracle_table(labels, seed + 1))
    # Every row's nearest other row has its label; rows of one label differ, so ties fall to a random row.
    assert torch.equal(labels[nearest_other(table)], labels) and not torch.equal(table[0], table[2])


def test_member_groups_are_codes_of_the_tasks_group_extra():
    task, train = superclasses()
    codes = member_groups(task, train)
    members = train.extras[task.group_extra]
    assert codes.min() == 0 and codes.max() == len(members.unique()) - 1
    assert torch.equal(members.unique()[codes], members)  # the same grouping, relabelled 0..G-1
    plain = TASKS.get("shapes-captions-tiny")()
    with pytest.raises(HarnessError) as error:
        member_groups(plain, plain.load().train)
    assert str(error.value) == ("guide group-oracle: task shapes-captions-tiny declares no member groups "
                                "(Task.group_extra); choose another guide")


def test_a_task_naming_a_group_extra_its_split_lacks_is_refused():
    task, train = superclasses()
    stripped = type(train)(train.inputs, train.labels, {})
    with pytest.raises(HarnessError, match="declares no member groups"):
        member_groups(task, stripped)


def nearest_other(table: torch.Tensor) -> torch.Tensor:
    g = torch.nn.functional.normalize(table, dim=1)
    return (g @ g.T).fill_diagonal_(-2).argmax(1)


def test_build_guide_makes_each_documented_kind(monkeypatch, tmp_path):
    task, train = superclasses()
    torch.manual_seed(11)
    oracle = build_guide("oracle", task, train, RECIPE, CPU)
    assert isinstance(oracle, TableGuide)
    assert torch.equal(oracle.table, label_oracle_table(train.labels, 11 + GUIDE_SEED_OFFSET))
    group = build_guide("group-oracle", task, train, RECIPE, CPU)
    members = train.extras["member"]
    neighbour = nearest_other(group.table)
    # A random other sample of its own member, wherever the member has another row (one may be alone in 48).
    has_other = torch.bincount(members)[members] > 1
    assert has_other.sum() > len(members) // 2
    assert torch.equal(members[neighbour][has_other], members[has_other])
    assert torch.equal(group.table, label_oracle_table(member_groups(task, train), 11 + GUIDE_SEED_OFFSET))
    np.save(tmp_path / "t.npy", np.arange(len(train) * 2, dtype=np.float32).reshape(-1, 2))
    table = build_guide(f"embeddings:{tmp_path / 't.npy'}", task, train, RECIPE, CPU)
    assert isinstance(table, TableGuide) and table.table[3].tolist() == [6.0, 7.0]
    module = build_guide("module:tests.test_guides:scaled_sum", task, train, RECIPE, CPU)
    assert isinstance(module, EncoderGuide) and torch.equal(module.encoder[1].weight, scaled_sum()[1].weight)
    calls = []
    for name in ("trained_clip_image_encoder", "trained_image_only_encoder"):
        monkeypatch.setattr(guides, name, lambda *a, name=name: calls.append((name, a)) or scaled_sum())
    plain = TASKS.get("shapes-captions-tiny")()  # no guide pool: the guide trains on the task's own split
    plain_train = plain.load().train
    pool = task.guide_pool()
    for kind, name in (("clip", "trained_clip_image_encoder"), ("simclr", "trained_image_only_encoder")):
        built = build_guide(kind, plain, plain_train, RECIPE, CPU)
        given = calls[-1][1]
        assert isinstance(built, EncoderGuide) and calls[-1][0] == name
        assert all(a is b for a, b in zip(given, (plain, plain_train, RECIPE, CPU), strict=True))
        assert built.facts == {"guide_training_data": "this task's own training split (48 rows, every modality it "
                                                      "has, captions included)"}
        built = build_guide(kind, task, train, RECIPE, CPU)  # a task with a pool: the pool's rows, never its own
        source, rows, *rest = calls[-1][1]
        assert calls[-1][0] == name and rest == [RECIPE, CPU] and source.identity() == pool.identity()
        assert torch.equal(rows.inputs["image"], pool.load().train.inputs["image"]) and "caption" in rows.inputs
        assert built.facts["guide_training_data"].startswith("the guide pool shapes-superclasses-pool, drawn apart")
        assert built.facts["guide_pool_members"] == ("the pool holds images of 12 of this task's 12 member groups "
                                                     "('member'); of every one the probe holds out")
    torch.manual_seed(11)
    random = build_guide("random", task, train, RECIPE, CPU)
    assert isinstance(random, EncoderGuide) and random.facts["guide_training_data"].startswith("none: ")
    torch.manual_seed(11)
    again = build_guide("random", task, train, RECIPE, CPU)  # seeded with the guide's seed: the same weights
    images = train.inputs["image"][:4]
    assert torch.equal(random(images, None), again(images, None)) and random(images, None).shape == (4, 8)
    torch.manual_seed(11 + GUIDE_SEED_OFFSET)  # the docstring's guide: the default encoder at the guide's seed
    assert torch.equal(random(images, None), ModalityEncoders(task, 8)["image"].eval()(images))
    torch.manual_seed(12)
    assert not torch.equal(build_guide("random", task, train, RECIPE, CPU)(images, None), random(images, None))
    # open_clip:ARCH:PATH hands ARCH:PATH to its loader (tests/test_open_clip_guide.py tests the loader itself).
    monkeypatch.setattr(guides, "open_clip_encoder", lambda *a: calls.append(("open_clip", a)) or scaled_sum())
    built = build_guide("open_clip:ViT-B-32:/m/w.pt", task, train, RECIPE, CPU)
    assert isinstance(built, EncoderGuide) and built.facts["guide_training_data"].endswith("ViT-B-32:/m/w.pt")
    assert calls[-1][0] == "open_clip" and calls[-1][1][0] == "ViT-B-32:/m/w.pt" and calls[-1][1][1] is task
    # The guide is moved to the run's device (the meta device stands in for an accelerator on any machine).
    assert build_guide("oracle", task, train, RECIPE, torch.device("meta")).table.is_meta
    with pytest.raises(HarnessError) as error:
        build_guide("captions", task, train, RECIPE, CPU)
    assert str(error.value) == ("guide 'captions': write clip, simclr, random, oracle, group-oracle, "
                                "embeddings:PATH, module:pkg.mod:factory or open_clip:ARCH:PATH")


def test_embedding_tables_load_from_npy_and_torch_files(tmp_path):
    table = torch.randn(4, 3)
    np.save(tmp_path / "a.npy", table.numpy())
    torch.save(table, tmp_path / "a.pt")
    assert torch.equal(load_table(tmp_path / "a.npy", 4), table)
    assert torch.equal(load_table(tmp_path / "a.pt", 4), table)


def message(call) -> str:
    with pytest.raises(HarnessError) as error:
        call()
    return str(error.value)


class Unsafe:
    """Any class: a pickle of it names code to import and call."""


def test_unreadable_or_misshapen_tables_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "missing.npy"
    assert message(lambda: load_table(path, 4)) == (
        f"guide embeddings {path} not found; write one row per training-split row there")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))  # np.load must refuse pickled objects
    (tmp_path / "junk.pt").write_bytes(b"not a tensor file")
    torch.save({"table": torch.zeros(4, 2)}, tmp_path / "dict.pt")
    torch.save(torch.zeros(4), tmp_path / "flat.pt")
    torch.save(torch.zeros(3, 2), tmp_path / "short.pt")
    torch.save(Unsafe(), tmp_path / "code.pt")  # unpickling it would run code: weights_only refuses it
    for name, error in (("objects.npy", "ValueError"), ("junk.pt", "UnpicklingError"), ("code.pt", "UnpicklingError")):
        assert message(lambda: load_table(tmp_path / name, 4)) == (
            f"guide embeddings {tmp_path / name}: not a readable tensor file ({error}); "
            f"write a .npy array or a torch.save'd tensor")
    for name, got in (("dict.pt", "dict"), ("flat.pt", "(4,)"), ("short.pt", "(3, 2)")):
        assert message(lambda: load_table(tmp_path / name, 4)) == (
            f"guide embeddings {tmp_path / name}: expected a (4, dim) tensor, one row per training row, got {got}")


def test_module_factories_are_imported_by_path():
    assert load_factory("tests.test_guides:scaled_sum") is scaled_sum
    for target in ("tests.no_such_module:f", "tests.test_guides:no_such_factory", "tests.test_guides"):
        text = message(lambda: load_factory(target))
        assert text.startswith(f"guide module:{target}: cannot import it (") and text.endswith(
            "); write module:pkg.mod:factory")


def test_the_image_modality_is_found_or_its_absence_named():
    task, _ = superclasses()
    assert image_modality(task) == "image"
    tabular = TASKS.get("tiny-synthetic")()
    assert message(lambda: image_modality(tabular)) == (
        "task tiny-synthetic has no image modality for the guide to embed")
    assert message(lambda: guides.trained_clip_image_encoder(TASKS.get("single-modality")(), None, RECIPE, CPU)) == (
        "task single-modality has no paired modality to train a CLIP guide on; pass "
        "--set guide=embeddings:PATH or --set guide=module:pkg.mod:factory")


@pytest.mark.parametrize("method, settings", [("clip", {"image_crops": True}), ("simclr", {})])
def test_a_trained_guide_is_that_method_trained_with_the_recipe_in_a_forked_rng(method, settings, monkeypatch, capfd):
    """The docstring's recipe: the harness's method, the recipe's epochs, batch, lr and width, weight decay 1e-5,
    seeded with the run's seed + GUIDE_SEED_OFFSET, its image encoder frozen; trained once per (task, recipe, seed);
    the run's own random stream untouched."""
    monkeypatch.setattr(guides, "_TRAINED", {})
    task = TASKS.get("shapes-captions-tiny")()
    train = task.load().train
    build = guides.trained_clip_image_encoder if method == "clip" else guides.trained_image_only_encoder
    torch.manual_seed(3)
    encoder = build(task, train, RECIPE, CPU)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert build(task, train, RECIPE, CPU) is encoder and torch.equal(torch.rand(1), after)
    assert not encoder.training
    # The same training, written out from the docstring.
    cls = METHODS.get(method)
    torch.manual_seed(3 + GUIDE_SEED_OFFSET)
    model = cls(task, cls.defaults | {"embed_dim": 8} | settings)
    fit(model, TaskData(train, train, train), TrainConfig(epochs=1, batch_size=16, lr=1e-3, weight_decay=1e-5,
                                                           device=CPU, progress=False),
        torch.Generator().manual_seed(3 + GUIDE_SEED_OFFSET))
    expected = model.encoders["image"].eval()
    images = train.inputs["image"][:8]
    assert torch.equal(encoder(images), expected(images))
    torch.manual_seed(4)  # another run seed, another recipe or another task: another guide
    assert build(task, train, RECIPE, CPU) is not encoder
    torch.manual_seed(3)
    assert build(task, train, RECIPE | {"lr": 2e-3}, CPU) is not encoder
    other = TASKS.get("shapes-superclasses-tiny")().guide_pool()
    assert build(other, other.load().train, RECIPE, CPU) is not encoder
    assert "epoch" not in capfd.readouterr().err  # no progress bar: the guide trains inside a run that draws its own
