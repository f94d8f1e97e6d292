"""Frozen guide models that embed images for CLIP-guided SimCLR.

A guide is named by a string (the method's `guide` hyperparameter):

    clip                      train the harness's `clip` method on image-caption pairs (the images randomly
                              cropped and flipped), through harness.running.train.fit, and use its image
                              encoder. The pairs are the training rows of the task's guide pool
                              (Task.guide_pool: drawn apart from the task, as the paper's guide is trained on
                              outside data) where it has one, else the task's own training split
    simclr                    a guide without text: the harness's `simclr` method trained on the same rows'
                              images with the CLIP guide's recipe (epochs, lr, width, batch), its image
                              encoder. A control: whatever it adds, the caption did not
    random                    the task's default image encoder at random initialization (seeded with the
                              guide's seed), never trained. A control: what any fixed encoder's neighbours add
    oracle                    the labels themselves: a view's nearest neighbour is a random other sample of
                              its class. Not a guide anyone has; a reference for what a guide that links
                              every member of a class adds (not a bound: a guide may do better)
    group-oracle              the task's member groups (Task.group_extra): a view's nearest neighbour is a
                              random other sample of its own member, never another member of its class. A
                              control: a guide that finds visual near-duplicates and links nothing
    embeddings:PATH           a tensor file (.pt, or .npy) of shape (training rows, dim): row i embeds
                              row i of the harness's training split; looked up by batch.index
    module:pkg.mod:factory    factory() returns any frozen module mapping image batches to embeddings
    open_clip:ARCH:PATH       a pretrained open_clip model's image tower (`pip install open_clip_torch`):
                              ARCH one of open_clip.list_models(), PATH a local file of its weights (a state
                              dict, .safetensors, or OpenAI's TorchScript ViT-B-32.pt with ARCH
                              ViT-B-32-quickgelu); views resized and normalized as the model expects
                              (methods/common/open_clip_guide.py)

Encoder guides embed the same augmented views SimCLR sees, as the paper does;
an embeddings table (and the oracle) can only embed the un-augmented images.
Every guide carries `facts`: what it was built from, in sentences a record
states (Method.record_notes).
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.api.errors import HarnessError
from harness.api.space import POSITIVE, SIZE, OneOf
from harness.api.task import Split, Task, TaskData
from methods.common.encoders import ModalityEncoders
from methods.common.open_clip_guide import open_clip_encoder

# The guide hyperparameter's values: these names, or text after one of these prefixes.
GUIDE_NAMES = ("clip", "simclr", "random", "oracle", "group-oracle")
GUIDE_PREFIXES = ("embeddings:", "module:", "open_clip:")
GUIDE_SEED_OFFSET = 7919  # the guide's own seed differs from, but follows, the run's seed
_TRAINED: dict[tuple, nn.Module] = {}  # one guide per (task, recipe, run seed) and process
_POOLS: dict[str, Split] = {}  # a guide pool's training rows, loaded once per process (generated: seconds)
# The guide's hyperparameters, as every method that builds one declares them.
GUIDE_DEFAULTS = {"guide": "clip", "guide_epochs": 40, "guide_lr": 1e-3, "guide_embed_dim": 128}
GUIDE_DOMAINS = {"guide": OneOf(GUIDE_NAMES, prefixes=GUIDE_PREFIXES),
                 "guide_epochs": SIZE, "guide_lr": POSITIVE, "guide_embed_dim": SIZE}


class EncoderGuide(nn.Module):
    """Embeds the augmented image views themselves."""

    per_view = True

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)


class TableGuide(nn.Module):
    """Looks rows up in precomputed embeddings; both views of a sample get the same embedding."""

    per_view = False

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table.float())

    def forward(self, images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.table[rows.to(self.table.device)]


def guide_recipe(hparams: dict[str, Any], task: Task) -> dict[str, Any]:
    """How a trained guide is trained: its own epochs, lr and width, at the run's batch size."""
    return {"epochs": hparams["guide_epochs"], "lr": hparams["guide_lr"], "embed_dim": hparams["guide_embed_dim"],
            "batch_size": hparams.get("batch_size", task.default_batch_size)}


def build_guide(spec: str, task: Task, train: Split, recipe: dict[str, Any], device: torch.device) -> nn.Module:
    kind, _, target = spec.partition(":")
    if kind in ("clip", "simclr"):
        source, rows, facts = guide_training_rows(task, train)
        trainer = trained_clip_image_encoder if kind == "clip" else trained_image_only_encoder
        guide: nn.Module = EncoderGuide(trainer(source, rows, recipe, device))
    elif kind == "random":
        guide = EncoderGuide(untrained_image_encoder(task, recipe))
        facts = {"guide_training_data": "none: the task's default image encoder at random initialization"}
    elif kind == "oracle":
        guide = TableGuide(label_oracle_table(train.labels, torch.initial_seed() + GUIDE_SEED_OFFSET))
        facts = {"guide_training_data": "none: the guide is this task's training labels"}
    elif kind == "group-oracle":
        guide = TableGuide(label_oracle_table(member_groups(task, train), torch.initial_seed() + GUIDE_SEED_OFFSET))
        facts = {"guide_training_data": "none: the guide is this task's training member groups"}
    elif kind == "embeddings":
        guide = TableGuide(load_table(Path(target), len(train)))
        facts = {"guide_training_data": f"outside the harness: the embeddings table {target}"}
    elif kind == "module":
        guide = EncoderGuide(load_factory(target)())
        facts = {"guide_training_data": f"outside the harness: the module {target}"}
    elif kind == "open_clip":
        guide = EncoderGuide(open_clip_encoder(target, task))
        facts = {"guide_training_data": f"outside the harness: the open_clip model and weights {target}"}
    else:
        raise HarnessError(f"guide '{spec}': write clip, simclr, random, oracle, group-oracle, embeddings:PATH, "
                           f"module:pkg.mod:factory or open_clip:ARCH:PATH")
    guide.facts = facts
    return guide.to(device)


def guide_training_rows(task: Task, train: Split) -> tuple[Task, Split, dict[str, str]]:
    """The task and split a trained guide learns from, the guide pool's where the task has one, and the facts
    a record states about them."""
    pool = task.guide_pool()
    if pool is None:
        return task, train, {"guide_training_data": f"this task's own training split ({len(train)} rows, every "
                                                    f"modality it has, captions included)"}
    key = repr(pool.identity())
    if key not in _POOLS:
        _POOLS[key] = pool.load().train
    rows = _POOLS[key]
    facts = {"guide_training_data": f"the guide pool {pool.name}, drawn apart from this task's rows: "
                                    f"{pool.description} ({len(rows)} training rows)"}
    extra = task.group_extra
    if extra is not None and extra in rows.extras and extra in train.extras:
        own = set(train.extras[extra].tolist())
        pooled = own & set(rows.extras[extra].tolist())
        missing = sorted(own - pooled)
        facts["guide_pool_members"] = (
            f"the pool holds images of {len(pooled)} of this task's {len(own)} member groups ('{extra}')"
            + ("; of every one the probe holds out" if not missing else f"; none of {missing[:12]}"))
    return pool, rows, facts


def untrained_image_encoder(task: Task, recipe: dict[str, Any]) -> nn.Module:
    """The task's default image encoder at random initialization, seeded with the guide's seed in a forked RNG
    (so the run's own random stream is what it would be without it)."""
    image = image_modality(task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch.initial_seed() + GUIDE_SEED_OFFSET)
        encoders = ModalityEncoders(task, int(recipe["embed_dim"]), names=(image,))
    return encoders[image].eval()


def member_groups(task: Task, train: Split) -> torch.Tensor:
    """Each training row's member group id (the split extra the task names), as 0..G-1 codes."""
    extra = task.group_extra
    if extra is None or extra not in train.extras:
        raise HarnessError(f"guide group-oracle: task {task.name} declares no member groups (Task.group_extra); "
                           f"choose another guide")
    return torch.unique(train.extras[extra].long(), return_inverse=True)[1]


def label_oracle_table(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """One-hot ids (labels, or member groups) plus a little fixed noise, so that ties fall to a random row."""
    one_hot = torch.nn.functional.one_hot(labels.long(), int(labels.max()) + 1).float()
    return one_hot + 1e-3 * torch.randn(one_hot.shape, generator=torch.Generator().manual_seed(seed))


def load_table(path: Path, rows: int) -> torch.Tensor:
    if not path.exists():
        raise HarnessError(f"guide embeddings {path} not found; write one row per training-split row there")
    try:  # neither may run code: np.load refuses pickled objects, torch.load reads tensors only
        table = (torch.from_numpy(np.load(path, allow_pickle=False)) if path.suffix == ".npy"
                 else torch.load(path, map_location="cpu", weights_only=True))
    except (pickle.UnpicklingError, ValueError, RuntimeError, OSError, EOFError) as exc:
        raise HarnessError(f"guide embeddings {path}: not a readable tensor file ({type(exc).__name__}); "
                           f"write a .npy array or a torch.save'd tensor") from None
    if not isinstance(table, torch.Tensor) or table.ndim != 2 or len(table) != rows:
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise HarnessError(f"guide embeddings {path}: expected a ({rows}, dim) tensor, one row per training "
                           f"row, got {shape}")
    return table


def load_factory(target: str):
    module_name, _, attribute = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise HarnessError(f"guide module:{target}: cannot import it ({exc}); write module:pkg.mod:factory") from None


def image_modality(task: Task) -> str:
    for modality in task.modalities:
        if modality.kind == "image":
            return modality.name
    raise HarnessError(f"task {task.name} has no image modality for the guide to embed")


def trained_clip_image_encoder(task: Task, train: Split, recipe: dict[str, Any], device: torch.device) -> nn.Module:
    """Train the harness's `clip` method on the task's training pairs; return its frozen image encoder.

    The training runs in a forked RNG with its own seed, so the run's random stream afterwards is the
    same whether the guide was trained now or reused from an earlier run in this process.
    """
    if len(task.modalities) < 2:
        raise HarnessError(f"task {task.name} has no paired modality to train a CLIP guide on; pass "
                           f"--set guide=embeddings:PATH or --set guide=module:pkg.mod:factory")
    seed = torch.initial_seed()
    key = (repr(task.identity()), repr(sorted(recipe.items())), seed, str(device))
    if key not in _TRAINED:
        _TRAINED[key] = _fit_clip(task, train, recipe, device, seed + GUIDE_SEED_OFFSET)
    return _TRAINED[key]


def trained_image_only_encoder(task: Task, train: Split, recipe: dict[str, Any], device: torch.device) -> nn.Module:
    """Train the harness's `simclr` method on the task's training images with the CLIP guide's recipe and seed;
    return its frozen image encoder: the same training budget as the CLIP guide, without the captions."""
    seed = torch.initial_seed()
    key = ("simclr", repr(task.identity()), repr(sorted(recipe.items())), seed, str(device))
    if key not in _TRAINED:
        _TRAINED[key] = _fit_guide("simclr", {}, task, train, recipe, device, seed + GUIDE_SEED_OFFSET)
    return _TRAINED[key]


def _fit_clip(task: Task, train: Split, recipe: dict[str, Any], device: torch.device, seed: int) -> nn.Module:
    return _fit_guide("clip", {"image_crops": True}, task, train, recipe, device, seed)


def _fit_guide(method: str, settings: dict[str, Any], task: Task, train: Split, recipe: dict[str, Any],
               device: torch.device, seed: int) -> nn.Module:
    from harness.api.catalog import METHODS  # the registry, so the guide is exactly that row's method
    from harness.running.train import TrainConfig, fit

    method_cls = METHODS.get(method)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = method_cls(task, method_cls.defaults | {"embed_dim": int(recipe["embed_dim"])} | settings)
        config = TrainConfig(epochs=int(recipe["epochs"]), batch_size=int(recipe["batch_size"]),
                             lr=float(recipe["lr"]), weight_decay=1e-5, device=device, progress=False)
        fit(model, TaskData(train, train, train), config, torch.Generator().manual_seed(seed))
    return model.encoders[image_modality(task)].eval()
