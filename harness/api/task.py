"""The Task interface and the data it hands out.

A task describes its modalities and labels, loads train/val/test splits,
fingerprints what it loaded, and offers per-modality augmentations. It never
touches MLflow, Optuna or the result files.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

ModalityKind = Literal["tabular", "timeseries", "sequence", "image", "tokens"]


@dataclass(frozen=True)
class Modality:
    """One input stream. `shape` is per sample; `encoder` picks a non-default encoder family."""

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]
    vocab_size: int | None = None
    encoder: str | None = None


@dataclass(frozen=True)
class DataSource:
    """Where a task's data come from. For "files", `files` are paths under the data directory."""

    kind: Literal["generated", "bundled", "files"]
    files: tuple[str, ...] = ()
    instructions: str = ""


@dataclass
class Batch:
    """What a method sees in one training step. `view(m)` draws a fresh augmentation of modality m;
    `two_views()` the two augmented views of every modality a two-view loss needs."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    index: torch.Tensor
    augment: Any = None  # callable(modality_name, tensor) -> tensor, bound by the harness
    augment_pair: Any = None  # callable(modality_name, tensor) -> (view, view) or None: Task.augment_pair

    def view(self, modality: str) -> torch.Tensor:
        if self.augment is None:
            raise RuntimeError("this task offers no augmentations; declare needs_augmentations in the method")
        return self.augment(modality, self.inputs[modality])

    def views(self) -> dict[str, torch.Tensor]:
        return {name: self.view(name) for name in self.inputs}

    def paired_views(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None:
        """Two views of every modality, each modality's pair drawn in one call; None where the task draws
        its views one at a time (then call `views` twice, in the order the method always did)."""
        if self.augment_pair is None:
            return None
        pairs = {name: self.augment_pair(name, x) for name, x in self.inputs.items()}
        if any(pair is None for pair in pairs.values()):
            return None
        return {name: pair[0] for name, pair in pairs.items()}, {name: pair[1] for name, pair in pairs.items()}

    def two_views(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Two fresh augmentations of every modality, as a two-view (SimCLR-style) loss contrasts them: a pair
        drawn in one call where the task offers that, else `views()` twice."""
        return self.paired_views() or (self.views(), self.views())

    def __len__(self) -> int:
        return len(self.labels)


class Split(ABC):
    """A split of a task: labels in memory, inputs delivered in batches."""

    labels: torch.Tensor
    extras: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]:
        """Yield (inputs, labels, row indices); the last batch may be smaller."""

    @abstractmethod
    def fingerprint_update(self, digest: "hashlib._Hash") -> None:
        """Feed what identifies this split's data into a running hash."""

    @abstractmethod
    def take(self, rows: torch.Tensor) -> "Split":
        """The rows given, as a split of the same kind."""

    def subset(self, limit: int) -> "Split":
        """At most `limit` evenly spaced rows: cheap, deterministic, and spans sorted data."""
        n = len(self)
        if n <= limit:
            return self
        return self.take(torch.linspace(0, n - 1, limit).long())


@dataclass
class TensorSplit(Split):
    """A split held in memory as tensors; `extras` carries per-row side data such as latents."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, tensor in self.inputs.items():
            if len(tensor) != len(self.labels):
                raise ValueError(f"modality {name} has {len(tensor)} rows but there are {len(self.labels)} labels")

    def batches(self, batch_size, *, shuffle=False, generator=None):
        n = len(self.labels)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            yield {k: v[rows] for k, v in self.inputs.items()}, self.labels[rows], rows

    def take(self, rows: torch.Tensor) -> "TensorSplit":
        return TensorSplit({k: v[rows] for k, v in self.inputs.items()}, self.labels[rows],
                           {k: v[rows] for k, v in self.extras.items()})

    def fingerprint_update(self, digest) -> None:
        for name in sorted(self.inputs):
            digest.update(name.encode())
            digest.update(self.inputs[name].contiguous().numpy().tobytes())
        digest.update(self.labels.contiguous().numpy().tobytes())


@dataclass
class TaskData:
    train: Split
    val: Split
    test: Split

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            split.fingerprint_update(digest)
        return digest.hexdigest()[:16]


class Task(ABC):
    """Subclass, set the class attributes, implement `load`, and register the class."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    suite: ClassVar[str] = "misc"  # tasks of one suite share a leaderboard table
    description: ClassVar[str] = ""
    label_kind: ClassVar[Literal["binary", "multiclass"]] = "binary"
    labels_for_training: ClassVar[bool] = True  # False where labels are for the probe only, not for training
    default_epochs: ClassVar[int] = 10
    default_batch_size: ClassVar[int] = 256
    extra_symbols: ClassVar[dict[str, str]] = {}  # how papers write the splits' extras, for reports
    # The metric the leaderboard ranks this task by, and others shown beside it (names in a record's metrics).
    main_score: ClassVar[str] = "test_acc"
    side_scores: ClassVar[tuple[str, ...]] = ()
    # The split extra holding each row's member group within its class (an integer id per row), or None.
    # A task that names one is scored on held-out members as well (harness.running.grouped).
    group_extra: ClassVar[str | None] = None
    # The task whose inputs and views this one trains on unchanged, differing only in the label, or None. A
    # method that never reads labels trains one encoder for both, and the claims count it once
    # (harness.results.encoders.encoder_key); tests/test_claims.py checks every declaration against the data.
    inputs_of: ClassVar[str | None] = None

    def __init__(self, data_dir: Path | None = None, **params: Any):
        self.data_dir = Path(data_dir) if data_dir else None
        self.params = params

    @property
    @abstractmethod
    def modalities(self) -> tuple[Modality, ...]: ...

    @property
    @abstractmethod
    def num_classes(self) -> int: ...

    @property
    def source(self) -> DataSource:
        return DataSource("generated")

    def data_present(self) -> bool:
        if self.source.kind != "files":
            return True
        return self.data_dir is not None and all((self.data_dir / f).exists() for f in self.source.files)

    @abstractmethod
    def load(self) -> TaskData:
        """Load the three splits. Missing or malformed data raises HarnessError naming path, problem, source."""

    def guide_pool(self) -> Task | None:
        """A task of image-caption pairs drawn apart from this one (other instances, its own generator seed and
        size, which its description states), on whose training rows a method pretrains any guide or teacher it
        needs, so that none of this task's rows (nor text, where it has none) enters that training; None: a
        guide trains on this task's own training split. A pool that names this task's `group_extra` uses the
        same group ids, so a record can say which of this task's member groups the pool held."""
        return None

    def augment(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """A fresh random augmentation of a batch of one modality, drawn from torch's seeded RNG.

        Tasks that offer augmentations override this; self-supervised methods need it.
        """
        raise NotImplementedError(f"task {self.name} offers no augmentations")

    def augment_pair(self, modality: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Two fresh augmentations of a batch drawn in one call (one launch of each kernel over both views),
        or None: the task draws views one at a time with `augment`, the random stream every published
        record was made with. A task overrides this only together with a new version."""
        return None

    @classmethod
    def offers_augmentations(cls) -> bool:
        return cls.augment is not Task.augment

    def modality(self, name: str) -> Modality:
        for modality in self.modalities:
            if modality.name == name:
                return modality
        raise KeyError(name)

    def identity(self) -> dict[str, Any]:
        scores = {} if self.main_score == "test_acc" and not self.side_scores else {
            "main_score": self.main_score, "side_scores": list(self.side_scores)}
        # The scores travel with every record (the leaderboard reads them there, without importing the task);
        # a task on the default scores keeps the identity dict it always had.
        return {"name": self.name, "version": self.version, "suite": self.suite, "params": self.params} | scores
