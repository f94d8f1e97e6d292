"""The Method interface.

A method is one class: it declares its name, requirements and search space,
builds its networks from the task's description, returns its loss on a batch
and encodes inputs into the frozen representation the probe scores. The
harness owns the training loop, optimizers, seeds, devices and all I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, get_args

import torch
from torch import nn

from harness.api.checks import AssumptionCheck  # noqa: F401 (its old home; check_assumptions returns them)
from harness.api.space import Domain, Param
from harness.api.task import Batch, ModalityKind, Split, Task


@dataclass(frozen=True)
class Requirements:
    """What a task must offer for the method to run on it. Every field is checked by `unmet`."""

    min_modalities: int = 1
    needs_labels: bool = False  # trains on the training split's labels
    needs_augmentations: bool = False
    modality_kinds: frozenset[str] | None = None  # every modality must be one of these kinds
    # A guide model embeds the task's images. Whether the default guide can be trained on the task (it needs a
    # paired modality) depends on the --set guide value, so the method checks that when it builds it.
    needs_guide: bool = False
    needs_groups: bool = False  # reads the task's member groups (Task.group_extra)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.modality_kinds or ()) - set(get_args(ModalityKind)))
        if unknown:  # a misspelt kind would silently rule out every task
            raise ValueError(f"Requirements: unknown modality kind(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(get_args(ModalityKind))}")

    def unmet(self, task: Task) -> str | None:
        """Why the task does not qualify, as the leaderboard prints it, or None if it does."""
        kinds = [m.kind for m in task.modalities]
        if len(kinds) < self.min_modalities:
            return f"needs {self.min_modalities} modalities"
        if self.needs_labels and not task.labels_for_training:
            return "needs labels to train on"
        if self.needs_augmentations and not task.offers_augmentations():
            return "needs augmentations"
        if self.modality_kinds is not None:
            other = sorted(set(kinds) - self.modality_kinds)
            if other:
                return f"needs {' or '.join(sorted(self.modality_kinds))} inputs, not {', '.join(other)}"
        if self.needs_guide and "image" not in kinds:
            return "needs an image modality for its guide to embed"
        if self.needs_groups and getattr(task, "group_extra", None) is None:
            return "needs member groups within its classes"
        return None

    def describe(self) -> str:
        parts = []
        if self.min_modalities > 1:
            parts.append(f"{self.min_modalities}+ modalities")
        if self.needs_labels:
            parts.append("labels")
        if self.needs_augmentations:
            parts.append("augmentations")
        if self.modality_kinds is not None:
            parts.append("/".join(sorted(self.modality_kinds)) + " inputs")
        if self.needs_guide:
            parts.append("a guide model (on an image modality)")
        if self.needs_groups:
            parts.append("member groups")
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class InputModalities:
    """Which of a task's modalities a method trains on, and which its probed representation reads.

    The harness hands `loss` batches holding only `train`, and `encode` inputs holding only
    `probe`, so a method that declares images alone cannot read a caption even by mistake.
    `prepare` still receives the whole training split: a guide may be built from the rest.
    """

    train: tuple[str, ...]
    probe: tuple[str, ...]

    def unmet(self, task: Task) -> str | None:
        offered = {m.name for m in task.modalities}
        missing = sorted((set(self.train) | set(self.probe)) - offered)
        if missing:
            return f"needs modality {', '.join(missing)}"
        if not self.train or not self.probe:
            return "needs an input modality it can train on and probe"
        return None


@dataclass(frozen=True)
class AuditData:
    """What `Method.audit` reads: training rows to fit on and held-out rows to score (the validation
    split, never the test split), at the run's batch size, on its device, deterministic for its seed."""

    train: Split
    held_out: Split
    batch_size: int
    device: torch.device
    seed: int


@dataclass
class Auxiliary:
    """A separate objective with its own optimizer, stepped `steps` times after each main step.

    FactorCL trains its CLUB critics this way: an adversary that must keep up
    with the encoders may need several steps per main step. Its parameters are
    excluded from the main optimizer; `loss` receives the same batch the main
    step saw, and returns the loss or, like `Method.loss`, a dict with key
    "loss" and further scalars to log (averaged over the steps).
    """

    name: str
    parameters: Iterable[nn.Parameter]
    loss: Callable[[Batch], torch.Tensor | dict[str, torch.Tensor]]
    lr_scale: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        # `module.parameters()` is a generator; keep a list so it can be read more than once.
        self.parameters = list(self.parameters)
        if self.steps < 1:
            raise ValueError(f"auxiliary {self.name}: steps must be at least 1, got {self.steps}")


class Method(nn.Module):
    """Subclass, set the class attributes, implement `loss` and `encode`, and register the class."""

    name: ClassVar[str]
    display_name: ClassVar[str]  # the name the papers' tables use
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    requirements: ClassVar[Requirements] = Requirements()
    search_space: ClassVar[dict[str, Param]] = {}
    defaults: ClassVar[dict[str, Any]] = {}
    # Every value each key of search_space and defaults may take (harness.api.space); checked before any work.
    domains: ClassVar[dict[str, Domain]] = {}
    trains: ClassVar[bool] = True  # False for reference rows that score a fixed representation

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A method that names no display name (plugins written to the smallest interface) shows its name.
        if "name" in vars(cls) and not hasattr(cls, "display_name"):
            cls.display_name = cls.name

    def __init__(self, task: Task, hparams: dict[str, Any]):
        super().__init__()
        self.task = task
        self.hparams = hparams

    def loss(self, batch: Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """The training loss, or a dict with key "loss" and further scalars to log."""
        raise NotImplementedError(f"{self.name} does not train")

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The representation the linear probe scores, one row per sample."""
        raise NotImplementedError

    @classmethod
    def input_modalities(cls, task: Task) -> InputModalities:
        """The modalities this method trains on and probes; all of the task's by default."""
        names = tuple(m.name for m in task.modalities)
        return InputModalities(names, names)

    def auxiliaries(self) -> list[Auxiliary]:
        return []

    def prepare(self, train: Any) -> None:
        """Optional hook, called once with the training split before the first step."""

    def check_assumptions(self, history: list[dict[str, float]]) -> list[AssumptionCheck]:
        """Checks of what this run's number rests on, given the per-epoch logged means; none by default."""
        return []

    def record_notes(self) -> dict[str, str]:
        """Facts about this run that its record states beside the numbers, name -> one sentence (what a guide
        was trained on, whether it saw the probe's held-out members); read once a seed is trained, none by
        default. Not checks: nothing holds or fails."""
        return {}

    def audit(self, data: AuditData) -> list[AssumptionCheck]:
        """Checks of the frozen, trained model against held-out rows, run once per final seed after training
        (estimators re-scored, bounds compared with fresh ones); none by default."""
        return []
