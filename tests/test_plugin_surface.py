"""What a method author imports: `harness.api` names the shared building blocks (the very objects the built-in
methods use, from one home each), loads them only when asked, and `Batch.two_views` draws two views."""

import subprocess
import sys
from pathlib import Path

import torch

import harness.api
from harness.api import Batch

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"ModalityEncoders", "build_encoder", "encoder_family", "mlp", "projection_head", "ProjectedModalities",
          "image_modalities", "nt_xent", "nt_xent_logits", "symmetric_info_nce", "supcon", "gather"}


def test_the_building_blocks_are_the_objects_the_built_in_methods_use():
    from methods.common import encoders, losses, projected
    from methods import simclr

    assert BLOCKS <= set(harness.api.__all__)
    assert harness.api.ModalityEncoders is encoders.ModalityEncoders is simclr.ModalityEncoders
    assert harness.api.nt_xent is losses.nt_xent is simclr.nt_xent
    assert harness.api.ProjectedModalities is projected.ProjectedModalities
    assert harness.api.gather is simclr.gather


def test_importing_the_interface_loads_no_torch_and_no_method_code():
    probe = ("import sys, harness.api; "
             "print(sorted(m for m in sys.modules if m == 'torch' or m.split('.')[0] == 'methods'))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


def test_two_views_are_two_fresh_draws_or_the_task_s_pair():
    inputs = {"x": torch.zeros(3, 2), "y": torch.ones(3, 2)}
    draws = iter(range(1, 100))
    batch = Batch(inputs, torch.zeros(3), torch.arange(3), augment=lambda m, x: x + next(draws))
    first, second = batch.two_views()
    # Each modality of each view is its own fresh draw, in the order SimCLR draws them (x then y, twice).
    assert [float(v[m][0, 0] - inputs[m][0, 0]) for v in (first, second) for m in ("x", "y")] == [1.0, 2.0, 3.0, 4.0]

    paired = Batch(inputs, torch.zeros(3), torch.arange(3), augment=lambda m, x: x * 0,
                   augment_pair=lambda m, x: (x + 10, x + 20))
    first, second = paired.two_views()
    assert torch.equal(first["y"], inputs["y"] + 10) and torch.equal(second["y"], inputs["y"] + 20)
