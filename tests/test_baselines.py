"""The SupCon and Cross+Self baselines: their losses, and a run of each through the harness."""

import json

import pytest
import torch
import torch.nn.functional as F

from harness.api.catalog import METHODS
from harness.api.task import Batch
from methods.common.losses import nt_xent, supcon, symmetric_info_nce
from tests.fixtures import TinySynthetic


def supcon_by_the_definition(features: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Khosla et al.'s L_out written anchor by anchor, as the paper states it."""
    z = F.normalize(features, dim=1)
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = torch.logsumexp(torch.stack([z[i] @ z[a] / temperature for a in others]), dim=0)
        losses.append(-sum(z[i] @ z[p] / temperature - denominator for p in positives) / len(positives))
    return torch.stack(losses).mean()


def test_supcon_matches_its_definition():
    torch.manual_seed(0)
    features, labels = torch.randn(12, 5), torch.tensor([0, 1, 2, 0, 1, 0, 0, 1, 1, 0, 1, 3])  # class 3 seen once
    # Scores of unit vectors over 0.2 are at most 5; a logsumexp over 11 of them, taken two ways, rounds by
    # ~11 eps32 x 5 = 6.6e-6 on a loss of O(1): inside atol 1e-5 (plus allclose's rtol 1e-5).
    assert torch.allclose(supcon(features, labels, 0.2), supcon_by_the_definition(features, labels, 0.2), atol=1e-5)


def test_supcon_prefers_features_clustered_by_label():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (64,))
    centers = torch.randn(3, 8) * 5
    clustered = centers[labels] + 0.1 * torch.randn(64, 8)
    assert supcon(clustered, labels, 0.1) < supcon(torch.randn(64, 8), labels, 0.1) - 1.0


def build(name: str):
    torch.manual_seed(0)
    cls = METHODS.get(name)
    return cls(TinySynthetic(), cls.defaults | {"embed_dim": 16, "projection_dim": 8})


def test_supcon_treats_each_modality_as_a_view_with_the_sample_label():
    method = build("supcon")
    inputs, labels, index = next(TinySynthetic().load().train.batches(16))
    embeddings = method.encoders(inputs)
    views = torch.cat([method.projectors[m](z) for m, z in embeddings.items()])
    expected = supcon(views, labels.repeat(2), method.hparams["temperature"])
    # The same float32 loss computed twice on the same tensors, O(1) and far from 0: allclose's rtol 1e-5
    # (84 ulps at 1) is the binding tolerance, well above rounding; its atol 1e-8 plays no part.
    assert torch.allclose(method.loss(Batch(inputs, labels, index)), expected)


def test_cross_self_sums_the_cross_modal_term_and_one_self_term_per_modality():
    method = build("cross-self")
    task = method.task
    inputs, labels, index = next(task.load().train.batches(16))
    draws = iter([1.0, 2.0, 3.0, 4.0])  # views() draws x1 then x2, twice
    batch = Batch(inputs, labels, index, augment=lambda m, x: x + next(draws))
    out = method.loss(batch)
    t = method.hparams["temperature"]
    clean = method.project(inputs)
    # InfoNCE losses over 16 rows are ~log 16 = 2.8, far from 0: allclose's rtol 1e-5 binds (2.8e-5), well
    # above the same computation's rounding, and their sum below adds 2 roundings of ~eps32 x 9 = 1e-6.
    assert torch.allclose(out["cross"], symmetric_info_nce(clean["x1"], clean["x2"], 1 / t))
    first = method.project({"x1": inputs["x1"] + 1.0, "x2": inputs["x2"] + 2.0})
    second = method.project({"x1": inputs["x1"] + 3.0, "x2": inputs["x2"] + 4.0})
    for m in ("x1", "x2"):
        assert torch.allclose(out[f"self_{m}"], nt_xent(first[m], second[m], t))
    assert torch.allclose(out["loss"], out["cross"] + out["self_x1"] + out["self_x2"])


def test_both_baselines_run_through_the_harness(harness_run):
    fixed = ["--set", "lr=0.001", "--set", "embed_dim=64", "--set", "temperature=0.1"]
    assert harness_run("--method", "supcon,cross-self", "--task", "tiny-synthetic", "--seeds", "1", *fixed) == 0
    for name, display in (("supcon", "SupCon"), ("cross-self", "Cross+Self")):
        record = json.loads((harness_run.results / "records" / "tiny-synthetic" / name / "seed0.json").read_text())
        assert record["status"] == "ok" and record["method"]["display_name"] == display
        assert 0.0 <= record["metrics"]["test_acc"] <= 1.0


@pytest.mark.parametrize("name", ["supcon", "factorcl-sup"])
def test_label_methods_declare_they_need_labels(name):
    assert METHODS.get(name).requirements.needs_labels
