"""ImageNet (ILSVRC-2012) from image folders, and ImageNet-100 as a class subset of it.

Expected layout under the data directory (the common "reorganized" layout,
with the validation images moved into one folder per class):

    imagenet/train/<wnid>/*.JPEG
    imagenet/val/<wnid>/*.JPEG
    imagenet/imagenet100.txt        (ImageNet-100 only: one wnid per line)

The official validation set is the test split. A validation split for tuning
is carved from the training images with a fixed seed. Images are decoded with
Pillow in DataLoader worker processes (spawn), resized on the short side and
centre-cropped to `resolution`; the random augmentations then run batched on
the training device (tasks.common.image_augment).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from harness.api.errors import HarnessError
from harness.api.task import DataSource, Modality, Split, Task, TaskData
from tasks.common.augment import augment_by_kind

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
VAL_SEED = 0  # the carved validation split never changes with the run's seed
INSTRUCTIONS = ("Get ILSVRC-2012 from https://image-net.org (login required), extract train/ and val/, and move "
                "the validation images into val/<wnid>/ folders (e.g. with the widely used valprep.sh).")


def decode(path: str, resolution: int) -> torch.Tensor:
    """A (3, resolution, resolution) uint8 tensor: short side resized to `resolution`, centre crop."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resolution / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


class _Decoded(Dataset):
    """Picklable, so spawned workers can rebuild it: a list of paths and a resolution."""

    def __init__(self, paths: list[str], resolution: int):
        self.paths = paths
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return decode(self.paths[i], self.resolution)


class ImageFolderSplit(Split):
    """Image files and their labels; pixels are decoded batch by batch, never held in memory."""

    def __init__(self, paths: list[str], labels: torch.Tensor, resolution: int, workers: int, root: Path):
        self.paths = paths
        self.labels = labels
        self.extras = {}
        self.resolution = resolution
        self.workers = workers
        self.root = root

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor,
                                                                          torch.Tensor]]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        loader = DataLoader(_Decoded(self.paths, self.resolution), batch_size=batch_size, sampler=order.tolist(),
                            num_workers=self.workers,
                            multiprocessing_context="spawn" if self.workers > 0 else None)
        for start, pixels in zip(range(0, len(order), batch_size), loader):
            rows = order[start : start + batch_size]
            yield {"image": pixels.float().div_(255)}, self.labels[rows], rows

    def take(self, rows: torch.Tensor) -> "ImageFolderSplit":
        return ImageFolderSplit([self.paths[i] for i in rows.tolist()], self.labels[rows], self.resolution,
                                self.workers, self.root)

    def fingerprint_update(self, digest: "hashlib._Hash") -> None:
        # Paths (relative to the data root), labels and resolution identify the data; hashing every
        # pixel of 130k JPEGs would take longer than an epoch.
        for path in self.paths:
            digest.update(str(Path(path).relative_to(self.root)).encode())
        digest.update(self.labels.numpy().tobytes())
        digest.update(str(self.resolution).encode())


def list_images(folder: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for label, wnid in enumerate(classes):
        files = sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return paths, labels


class ImageNet(Task):
    name = "imagenet"
    version = "1"
    suite = "image"
    description = "ILSVRC-2012 from train/<wnid>/ and val/<wnid>/ folders; val is the test split."
    label_kind = "multiclass"
    default_epochs = 100
    default_batch_size = 256
    folder = "imagenet"
    classes_file: str | None = None  # a file of wnids under the folder; None means every class in train/
    nominal_classes = 1000
    resolution = 224
    val_fraction = 0.02
    workers = 2

    def __init__(self, data_dir: Path | None = None, **params: Any):
        super().__init__(data_dir, **params)
        self.resolution = int(params.get("resolution", self.resolution))
        self.workers = int(params.get("workers", self.workers))
        self.val_fraction = float(params.get("val_fraction", self.val_fraction))
        self.classes_file = params.get("classes_file", self.classes_file)

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return (Modality("image", "image", (3, self.resolution, self.resolution), encoder="resnet18"),)

    @property
    def num_classes(self) -> int:
        try:
            return len(self.classes())
        except HarnessError:
            return self.nominal_classes

    @property
    def source(self) -> DataSource:
        files = [f"{self.folder}/train", f"{self.folder}/val"]
        if self.classes_file:
            files.append(f"{self.folder}/{self.classes_file}")
        return DataSource("files", tuple(files), INSTRUCTIONS)

    def identity(self) -> dict[str, Any]:
        return super().identity() | {"params": {"resolution": self.resolution, "val_fraction": self.val_fraction,
                                                "classes_file": self.classes_file}}

    @property
    def root(self) -> Path:
        if self.data_dir is None:
            raise HarnessError(f"task {self.name}: no data directory given; pass --data-dir holding "
                               f"{self.folder}/train and {self.folder}/val. {INSTRUCTIONS}")
        return self.data_dir / self.folder

    def _require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise HarnessError(f"task {self.name}: {path} not found ({what} expected there). {INSTRUCTIONS}")
        return path

    def classes(self) -> list[str]:
        """The wnids in label order: the subset file's, or every folder in train/, sorted."""
        train = self._require(self.root / "train", "one folder of JPEGs per wnid")
        present = sorted(p.name for p in train.iterdir() if p.is_dir())
        if not self.classes_file:
            return present
        listed = self._require(self.root / self.classes_file, "a class-subset file, one wnid per line")
        wanted = sorted({line.strip() for line in listed.read_text().splitlines() if line.strip()})
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise HarnessError(f"task {self.name}: {listed} names {len(missing)} class(es) with no folder in "
                               f"{train}, e.g. {missing[0]}")
        return wanted

    def load(self) -> TaskData:
        classes = self.classes()
        train_paths, train_labels = list_images(self.root / "train", classes)
        val_dir = self._require(self.root / "val", "one folder of JPEGs per wnid")
        missing = [c for c in classes if not (val_dir / c).is_dir()]
        if missing:
            raise HarnessError(f"task {self.name}: {val_dir} has no folder for class {missing[0]} "
                               f"({len(missing)} missing); were the validation images sorted into wnid folders?")
        test_paths, test_labels = list_images(val_dir, classes)
        if not train_paths or not test_paths:
            raise HarnessError(f"task {self.name}: no images (*.JPEG) found under {self.root}. {INSTRUCTIONS}")
        train = self._split(train_paths, train_labels)
        carved = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SEED))
        n_val = max(1, round(self.val_fraction * len(train)))
        return TaskData(train=train.take(carved[n_val:].sort().values), val=train.take(carved[:n_val].sort().values),
                        test=self._split(test_paths, test_labels))

    def _split(self, paths: list[str], labels: list[int]) -> ImageFolderSplit:
        return ImageFolderSplit(paths, torch.tensor(labels, dtype=torch.long), self.resolution, self.workers,
                                self.root)

    def augment(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return augment_by_kind(self.modality(modality).kind, x)


class ImageNet100(ImageNet):
    name = "imagenet-100"
    description = "ImageNet-100: the classes listed in imagenet/imagenet100.txt (e.g. CMC's list); val is the test split."
    classes_file = "imagenet100.txt"
    nominal_classes = 100
