"""The `open_clip:ARCH:PATH` guide: the image tower of a pretrained open_clip model, from a local weights file.

ARCH is one of open_clip's architecture names (LIST_ARCHITECTURES prints them), PATH the file of that
model's weights: a state dict as torch.save or open_clip write it (.pt, .pth, .bin), a .safetensors file,
or OpenAI's own TorchScript release (ViT-B-32.pt, the file the paper's code loads; in open_clip its
architecture is ViT-B-32-quickgelu, since OpenAI's models use QuickGELU). Nothing is downloaded: the
harness runs where the weights are, and says in one line what is missing where they are not.

The harness's image views are [0, 1] RGB floats at the task's resolution; the guide resizes them to the
model's input size (bicubic, as CLIP's preprocessing), normalizes them with the model's mean and std and
runs `encode_image`, frozen in eval mode. open_clip gives a model built from a local file its
architecture's default mean and std (OpenAI's, right for OpenAI's and LAION's CLIP weights).
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.api.errors import HarnessError
from harness.api.task import Task

SPEC = "open_clip:ARCH:PATH"
LIST_ARCHITECTURES = "python -c \"import open_clip; print(open_clip.list_models())\""
# OpenAI's TorchScript archive keeps these beside the weights; open_clip's models have no such entries.
TORCHSCRIPT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


class OpenClipImages(nn.Module):
    """[0, 1] RGB image batches -> the model's image embeddings, resized and normalized as the model expects."""

    def __init__(self, model: nn.Module, size: tuple[int, int], mean: Any, std: Any):
        super().__init__()
        self.model = model
        self.size = size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if tuple(x.shape[-2:]) != self.size:
            # Bicubic overshoots; clamping keeps the pixels in range, as CLIP's 8-bit resize does.
            x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        return self.model.encode_image((x - self.mean) / self.std)


def open_clip_encoder(target: str, task: Task) -> OpenClipImages:
    """The guide's encoder for `open_clip:<target>`, target being ARCH:PATH; every problem is one HarnessError."""
    arch, path = parse_target(target)
    require_rgb_images(task)
    if not path.is_file():
        raise HarnessError(f"guide open_clip:{target}: weights file {path} not found; download the model's weights "
                           f"there, or name the file that holds them ({SPEC})")
    open_clip = import_open_clip()
    if arch not in open_clip.list_models():
        raise HarnessError(f"guide open_clip:{target}: open_clip knows no architecture '{arch}'; list them with "
                           f"{LIST_ARCHITECTURES}")
    model = load_model(open_clip, arch, path, f"open_clip:{target}")
    visual = model.visual  # every open_clip image tower says its input size; create_model sets its mean and std
    size = (visual.image_size,) * 2 if isinstance(visual.image_size, int) else tuple(visual.image_size)
    return OpenClipImages(model, size, visual.image_mean, visual.image_std)


def parse_target(target: str) -> tuple[str, Path]:
    """ARCH:PATH -> (ARCH, PATH): the architecture ends at the first colon, so a path may hold colons."""
    arch, _, path = target.partition(":")
    if not arch or not path:
        raise HarnessError(f"guide open_clip:{target}: write {SPEC}, e.g. "
                           f"open_clip:ViT-B-32-quickgelu:/models/ViT-B-32.pt")
    return arch, Path(path).expanduser()


def require_rgb_images(task: Task) -> None:
    images = [m for m in task.modalities if m.kind == "image"]
    if not images or images[0].shape[0] != 3:
        raise HarnessError(f"guide open_clip: task {task.name} has no RGB image modality for an open_clip model to "
                           f"embed; pick an image task (harness list tasks)")


def import_open_clip():
    try:
        import open_clip
    except ModuleNotFoundError as exc:
        if exc.name != "open_clip":  # installed, but something it needs is not
            raise HarnessError(f"guide open_clip: open_clip is installed but needs {exc.name}, which is not; "
                               f"pip install {exc.name}") from None
        raise HarnessError("guide open_clip: the open_clip package is not installed; pip install open_clip_torch "
                           "(it needs a torchvision built for this torch)") from None
    except (ImportError, OSError, RuntimeError) as exc:  # e.g. a torchvision wheel built for another torch
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(f"guide open_clip: open_clip does not import here ({reason}); install a torchvision "
                           f"built for torch {torch.__version__}") from None
    return open_clip


def load_model(open_clip, arch: str, path: Path, spec: str) -> nn.Module:
    """The architecture built by open_clip, then every one of its weights from the file (strictly)."""
    state = read_weights(open_clip, path, spec)
    with _quiet_warnings():  # open_clip warns that a model built without weights is random: ours come next
        model = open_clip.create_model(arch)
    # A TorchScript archive also keeps the buffers a model computes itself (attention masks): not weights.
    computed = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    state = {k: v for k, v in state.items() if k not in computed}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise HarnessError(f"guide {spec}: the weights in {path} do not fit architecture {arch} ({detail}); name the "
                           f"architecture they were saved from ({LIST_ARCHITECTURES})") from None
    return model  # EncoderGuide puts it in eval mode and freezes it


def read_weights(open_clip, path: Path, spec: str) -> dict[str, torch.Tensor]:
    try:
        if is_torchscript(path):
            # A TorchScript archive runs no Python when loaded; torch.load refuses it with weights_only=True.
            state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
            return {k: v for k, v in state.items() if k not in TORCHSCRIPT_EXTRAS}
        # open_clip's reader: torch.load with weights_only=True (no code runs), .safetensors, a {"state_dict": ...}
        # checkpoint and DataParallel's "module." prefixes.
        state = open_clip.factory.load_state_dict(str(path))
    except Exception as exc:  # whatever the file is, it is not weights: say so in one line
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise HarnessError(f"guide {spec}: {path} is not a readable weights file ({reason}); save the model's "
                           f"state dict with torch.save(model.state_dict(), PATH)") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(f"guide {spec}: {path} holds no state dict of tensors; save the model's state dict with "
                           f"torch.save(model.state_dict(), PATH)")
    return state


def is_torchscript(path: Path) -> bool:
    """Whether the file is a TorchScript archive (torch's own test: a zip holding constants.pkl)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


@contextlib.contextmanager
def _quiet_warnings() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
