"""What a `harness run` request resolves to for one pair: its hyperparameters, protocol and run identity.

Pure functions of the method's and task's declarations (their classes, or the metadata index's
entries for them) and the command line, with no torch: the runner uses them to decide what to
train, and `harness/cli/resumed.py` to see, before torch loads, that nothing needs training.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.api.space import NON_NEGATIVE, POSITIVE, Domain, Float, Interval, Param, check_domains, typed_overrides
from harness.results.identity import CODE, run_identity
from harness.running.provenance import code_digest

# What every training method tunes and fixes beside its own space; a method may narrow them.
TRAIN_SPACE: dict[str, Param] = {"lr": Float(1e-4, 3e-3, log=True)}
TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "weight_decay": 1e-5}
# A contrastive batch of one row holds no negative (and batch norm cannot train on it).
TRAIN_DOMAINS: dict[str, Domain] = {"lr": POSITIVE, "weight_decay": NON_NEGATIVE,
                                    "batch_size": Interval(low=2, integer=True)}


@dataclass
class RunOptions:
    """How every pair of a request runs: its budget, stores and precision (the command line's RunRequest
    adds what only the command needs)."""

    trials: int = 6
    seeds: int = 3
    epochs: int | None = None
    device: str = "auto"
    overrides: dict[str, str] = field(default_factory=dict)
    force: bool = False
    keep_old: bool = False  # keep records made under another identity instead of retraining them
    results: Path = Path("runs")  # the published results/ only when asked
    workdir: Path = Path(".harness")
    data_dir: Path | None = None
    progress: bool = True
    bf16: bool | None = None  # None: request.bf16_by_default for the task and device
    world_size: int = 1  # ranks training each run data-parallel (torchrun; harness.running.distributed)
    threads: int | None = None  # --threads: every fit's torch threads; None: chosen as each fit starts


# The devices a request may name, in words for error lines.
DEVICE_FORMS = "auto, cpu, cuda or cuda:N (N: a GPU's number)"


def is_device_name(text: str) -> bool:
    """Whether `text` names a device the harness accepts, by its spelling alone: the command line refuses a
    misspelling before torch loads; whether this machine has that device is environment.resolve_device's."""
    return text in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:[0-9]+", text) is not None


class MethodDeclaration(Protocol):
    """What a request reads of a method: a Method subclass has these, and so does its index entry."""

    name: str
    version: str
    trains: bool
    search_space: dict[str, Param]
    defaults: dict[str, Any]
    domains: dict[str, Domain]


def hyperparameters(method: MethodDeclaration, default_batch_size: int,
                    overrides: dict[str, str]) -> tuple[dict[str, Param], dict[str, Any]]:
    """The space still to tune, and every value fixed by defaults or --set (an unknown key or a value
    outside its domain fails here)."""
    space = {**TRAIN_SPACE, **method.search_space} if method.trains else {}
    defaults = {**TRAIN_DEFAULTS, "batch_size": default_batch_size, **method.defaults}
    fixed = typed_overrides(overrides, space, defaults)
    check_domains(f"method {method.name}", space, defaults, fixed, TRAIN_DOMAINS | method.domains)
    return {k: v for k, v in space.items() if k not in fixed}, defaults | fixed


def bf16_by_default(modality_kinds, device_type: str) -> bool:
    """Without --bf16 or --no-bf16: bfloat16 autocast for tasks with images trained on CUDA (about half
    of a float32 step there), float32 everywhere else, so records of other tasks and of CPU runs keep
    the protocol they had."""
    return device_type == "cuda" and "image" in set(modality_kinds)


def protocol(trains: bool, epochs: int, trials: int, seeds: int, space: dict[str, Param], fixed: dict[str, Any],
             bf16: bool = False, world_size: int = 1) -> dict[str, Any]:
    # A reference row (untrained encoders, raw features) trains for no epochs, and its record says so.
    found = {"epochs": epochs if trains else 0, "trials": trials if space else 0, "seeds": seeds,
             "batch_size": fixed.get("batch_size")}
    if bf16:
        found["precision"] = "bf16"  # only when set, so float32 records keep the protocol they had
    if trains and world_size > 1:
        # Data parallel (torchrun): batch_size is the global batch, split among the ranks. A reference row
        # trains nothing, so how many ranks ran it changes nothing.
        found["world_size"] = world_size
    return found


def identity(task_identity: dict[str, Any], fingerprint: str, method: MethodDeclaration,
             run_protocol: dict[str, Any], space: dict[str, Param], fixed: dict[str, Any], *,
             task_module: str, method_module: str) -> dict[str, Any]:
    """The request's run identity; the tuned keys' defaults are not fixed values and stay out of it.

    The modules defining the task and method classes name their code (harness.running.provenance): a
    plugin edited since a record was made is not the plugin the record stands for."""
    return run_identity(task_identity | {"fingerprint": fingerprint, CODE: code_digest(task_module)},
                        {"name": method.name, "version": method.version, CODE: code_digest(method_module)},
                        run_protocol, {k: v for k, v in fixed.items() if k not in space})
