"""The open_clip guide (methods/common/open_clip_guide.py): a pretrained model's image tower from a local file.

The loading tests build a tiny open_clip model here and save it (no download); they need the open_clip_torch
package, with a torchvision that loads beside this torch, and are skipped where it does not import. The
error paths run everywhere: each is one HarnessError naming the problem and the fix.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.api.errors import HarnessError
from harness.api.task import Modality
from harness.running import request
from methods.clip_guided_simclr import AddNewPositive
from methods.common.guides import EncoderGuide, build_guide
from methods.common.open_clip_guide import TORCHSCRIPT_EXTRAS, is_torchscript
from tests.fixtures import SingleModality
from tests.test_image_track import WNIDS, write_imagenet

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")
RECIPE = {"epochs": 1, "lr": 1e-3, "embed_dim": 8, "batch_size": 16}
TINY = "harness-test-tiny-vit"  # registered with open_clip by the `tiny` fixture, with image_size 32
OPEN_CLIP_ABSENT = importlib.util.find_spec("open_clip") is None


class RGBImages(SingleModality):
    """16 px RGB images: half the tiny model's input size, so the guide must resize them."""

    name = "rgb-images"

    @property
    def modalities(self):
        return (Modality("image", "image", (3, 16, 16)),)


def guide_for(spec: str, task=None, device: torch.device = CPU) -> EncoderGuide:
    return build_guide(spec, task or RGBImages(), None, RECIPE, device)


def message(spec: str, task=None) -> str:
    with pytest.raises(HarnessError) as error:
        guide_for(spec, task)
    text = str(error.value)
    assert "\n" not in text
    return text


# --- error paths: run with or without open_clip ---------------------------------------------------------------


@pytest.mark.parametrize("spec", ["open_clip:ViT-B-32", "open_clip::/models/w.pt", "open_clip:ViT-B-32:"])
def test_a_spec_without_architecture_or_path_names_the_syntax(spec):
    text = message(spec)
    assert f"guide {spec}: write open_clip:ARCH:PATH" in text


def test_a_missing_weights_file_is_named_before_open_clip_is_needed(tmp_path):
    missing = tmp_path / "nowhere" / "ViT-B-32.pt"
    text = message(f"open_clip:ViT-B-32-quickgelu:{missing}")
    assert f"weights file {missing} not found" in text


def test_a_path_may_hold_colons_the_architecture_ends_at_the_first(tmp_path):
    odd = tmp_path / "a:b.pt"
    assert f"weights file {odd} not found" in message(f"open_clip:ViT-B-32:{odd}")


def test_a_task_without_rgb_images_is_refused():
    text = message("open_clip:ViT-B-32:/models/w.pt", SingleModality())
    assert "task single-modality has no RGB image modality" in text and "harness list tasks" in text


@pytest.mark.skipif(not OPEN_CLIP_ABSENT, reason="open_clip is installed here: its absence cannot be seen")
def test_without_open_clip_the_error_says_how_to_install_it(tmp_path):
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    text = message(f"open_clip:ViT-B-32:{weights}")
    assert "the open_clip package is not installed; pip install open_clip_torch" in text


@pytest.mark.skipif(not OPEN_CLIP_ABSENT, reason="a real open_clip would be imported instead of the stand-in")
def test_an_installed_open_clip_missing_a_dependency_names_it(tmp_path, monkeypatch):
    # A stand-in package that fails as open_clip does where a dependency is absent.
    (tmp_path / "open_clip").mkdir()
    (tmp_path / "open_clip" / "__init__.py").write_text("import harness_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    text = message(f"open_clip:ViT-B-32:{weights}")
    assert "needs harness_absent_dependency, which is not; pip install harness_absent_dependency" in text


def test_the_method_accepts_an_open_clip_guide_spec():
    _space, fixed = request.hyperparameters(AddNewPositive, 256, {"guide": "open_clip:ViT-B-32:/models/w.pt"})
    assert fixed["guide"] == "open_clip:ViT-B-32:/models/w.pt"
    with pytest.raises(HarnessError):
        request.hyperparameters(AddNewPositive, 256, {"guide": "open_clip:"})


# As docs/imagenet.md's command: every hyperparameter fixed, so nothing is tuned. (A bad-input error inside a
# tuning trial would leave that trial failed in the study, and a rerun in the same --workdir would find it spent.)
FIXED = ("--set", "lr=1e-3", "--set", "temperature=0.1", "--set", "embed_dim=128")


def harness_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "tests.run_harness", "run", "--method", "cgs-add-new-positive", "--task",
            "imagenet-100", "--trials", "1", "--seeds", "1", "--epochs", "1", "--results", str(tmp_path / "results"),
            "--workdir", str(tmp_path / "work"), "--no-progress", "--allow-dirty", *FIXED, *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def test_the_papers_command_says_in_one_line_what_is_missing(tmp_path):
    """`harness run --method cgs-add-new-positive --task imagenet-100 --set guide=open_clip:...`: without the data
    the data error comes first; with the data, the guide's own error; each one line, exit 2, no record."""
    weights = tmp_path / "models" / "ViT-B-32.pt"
    guide = f"guide=open_clip:ViT-B-32-quickgelu:{weights}"
    no_data = one_error_line(harness_run(tmp_path, "--set", guide))
    assert no_data.startswith("error: task imagenet-100: data not found")
    write_imagenet(tmp_path / "data", {"train": 4, "val": 1})
    (tmp_path / "data" / "imagenet" / "imagenet100.txt").write_text("\n".join(WNIDS) + "\n")
    no_weights = one_error_line(harness_run(tmp_path, "--data-dir", str(tmp_path / "data"), "--set", guide))
    assert f"weights file {weights} not found" in no_weights
    if OPEN_CLIP_ABSENT:  # the weights there, open_clip not
        weights.parent.mkdir()
        torch.save({"w": torch.zeros(1)}, weights)
        no_package = one_error_line(harness_run(tmp_path, "--data-dir", str(tmp_path / "data"), "--set", guide))
        assert "pip install open_clip_torch" in no_package
    assert not (tmp_path / "results").exists()


# --- loading: needs open_clip ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_clip():
    return pytest.importorskip("open_clip")


def tiny_config(width: int) -> dict:
    return {"embed_dim": 8,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": width, "head_width": 8, "patch_size": 8},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny(open_clip, tmp_path_factory):
    """A tiny ViT open_clip model, registered as TINY, with its weights saved: (model, path)."""
    folder = tmp_path_factory.mktemp("open_clip")
    for name, width in ((TINY, 16), (TINY + "-wider", 24)):
        (folder / f"{name}.json").write_text(json.dumps(tiny_config(width)))
        open_clip.add_model_config(folder / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY).eval()
    path = folder / "tiny.pt"
    torch.save(model.state_dict(), path)
    return model, path


def normalized(model, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(model.visual.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std).view(1, 3, 1, 1)
    return (images - mean) / std


def test_the_guide_embeds_with_the_files_weights_as_the_model_itself_does(tiny):
    model, path = tiny
    torch.manual_seed(123)  # a model left at its random initialization would differ from the saved one
    guide = guide_for(f"open_clip:{TINY}:{path}")
    images = torch.rand(5, 3, 32, 32)  # the model's own size: no resize
    out = guide(images, torch.arange(5))
    assert out.shape == (5, 8)
    with torch.no_grad():
        assert torch.equal(out, model.encode_image(normalized(model, images)))
    assert torch.equal(guide(images, torch.arange(5)), out)  # deterministic
    assert not guide.encoder.training and not any(p.requires_grad for p in guide.parameters())
    assert not out.requires_grad  # frozen: nothing flows back into the guide, even with gradients on


def test_other_weights_in_the_file_give_other_embeddings(tiny, tmp_path):
    model, path = tiny
    state = torch.load(path, weights_only=True)
    # Random, not constant: ln_post's output has zero mean per row, so adding a constant to the projection is invisible.
    state["visual.proj"] += 0.1 * torch.randn(state["visual.proj"].shape, generator=torch.Generator().manual_seed(1))
    torch.save(state, tmp_path / "perturbed.pt")
    images = torch.rand(4, 3, 32, 32)
    original = guide_for(f"open_clip:{TINY}:{path}")(images, torch.arange(4))
    perturbed = guide_for(f"open_clip:{TINY}:{tmp_path / 'perturbed.pt'}")(images, torch.arange(4))
    assert not torch.allclose(original, perturbed)


def test_smaller_views_are_resized_to_the_models_input(tiny):
    model, path = tiny
    guide = guide_for(f"open_clip:{TINY}:{path}")
    colours = torch.rand(3, 3, 1, 1)
    # A flat colour resized is the same flat colour (the interpolation weights sum to 1, to float rounding).
    small, full = colours.expand(3, 3, 16, 16), colours.expand(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.encode_image(normalized(model, full))
    assert torch.allclose(guide(small, torch.arange(3)), expected, atol=1e-5)


def test_openais_torchscript_release_loads_too(tiny, tmp_path):
    model, path = tiny
    images = torch.rand(2, 3, 32, 32)
    released = copy.deepcopy(model)
    for extra in TORCHSCRIPT_EXTRAS:  # OpenAI's archive keeps these beside the weights (one is an attribute here)
        if not hasattr(released, extra):
            released.register_buffer(extra, torch.tensor(32))
    assert "input_resolution" in dict(released.state_dict())
    archive = torch.jit.trace_module(released, {"encode_image": (images,)}, check_trace=False)
    torch.jit.save(archive, tmp_path / "scripted.pt")
    assert is_torchscript(tmp_path / "scripted.pt") and not is_torchscript(path)
    guide = guide_for(f"open_clip:{TINY}:{tmp_path / 'scripted.pt'}")
    with torch.no_grad():
        assert torch.equal(guide(images, torch.arange(2)), model.encode_image(normalized(model, images)))


def test_weights_of_another_architecture_are_refused(tiny):
    _model, path = tiny
    text = message(f"open_clip:{TINY}-wider:{path}")
    assert f"the weights in {path} do not fit architecture {TINY}-wider" in text and "list_models" in text


def test_an_unknown_architecture_says_how_to_list_them(tiny):
    _model, path = tiny
    text = message(f"open_clip:ViT-Nonesuch:{path}")
    assert "open_clip knows no architecture 'ViT-Nonesuch'" in text and "open_clip.list_models()" in text


def test_a_file_that_holds_no_weights_is_refused(tiny, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "is not a readable weights file" in message(f"open_clip:{TINY}:{tmp_path / 'junk.pt'}")


def test_the_guide_moves_to_the_runs_device(tiny):
    _model, path = tiny
    guide = guide_for(f"open_clip:{TINY}:{path}", device=torch.device("meta"))
    assert all(t.is_meta for t in [*guide.parameters(), *guide.buffers()])
