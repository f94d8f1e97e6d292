"""ImageNet (ILSVRC-2012) from image folders, and ImageNet-100 as a class subset of it.

Expected layout under the data directory (the common "reorganized" layout,
with the validation images moved into one folder per class):

    imagenet/train/<wnid>/*.JPEG
    imagenet/val/<wnid>/*.JPEG
    imagenet/imagenet100.txt        (ImageNet-100 only: one wnid per line)

The official validation set is the test split. A validation split for tuning
is carved from the training images with a fixed seed. Images are decoded in
worker processes started once per run (tasks.common.jpeg: libjpeg-turbo,
short side resized to `resolution`, centre crop), delivered as uint8 and
converted on the device, where the random augmentations run batched
(tasks.common.image_augment). Where nvjpeg works (CUDA and a matching
torchvision), a share of each batch is decoded on the GPU instead
(`gpu_decode`, on by default; tasks.common.jpeg_gpu).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from harness.api.errors import HarnessError
from harness.api.task import DataSource, Modality, Split, Task, TaskData
from tasks.common.batched_augment import simclr_batched
from tasks.common.jpeg import ImagePool, default_workers
from tasks.common.jpeg_gpu import nvjpeg_decoder

IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
VAL_SEED = 0  # the carved validation split never changes with the run's seed
INSTRUCTIONS = ("Get ILSVRC-2012 from https://image-net.org (login required), extract train/ and val/, and move "
                "the validation images into val/<wnid>/ folders (e.g. with the widely used valprep.sh).")


class ImageFolderSplit(Split):
    """Image files and their labels; pixels are decoded batch by batch, never held in memory.

    Every split of a task shares one ImagePool: its rows are indices into the pool's files, and the
    pool's worker processes, started on the first pass, serve every later pass and split.
    """

    def __init__(self, pool: ImagePool, files: list[int], labels: torch.Tensor, root: Path):
        self.pool = pool
        self.files = files
        self.labels = labels
        self.extras = {}
        self.root = root
        self._subsets: dict[int, ImageFolderSplit] = {}

    @property
    def paths(self) -> list[str]:
        return [self.pool.paths[i] for i in self.files]

    def batches(self, batch_size: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor,
                                                                          torch.Tensor]]:
        """uint8 pixels (batch, 3, height, width), channels_last in memory; encoders and augmentations
        convert them to floats in [0, 1] on the device."""
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        files = [self.files[i] for i in order.tolist()]
        for pixels, start in zip(self.pool.batches(files, batch_size), range(0, len(order), batch_size)):
            rows = order[start : start + batch_size]
            yield {"image": pixels}, self.labels[rows], rows

    def take(self, rows: torch.Tensor) -> "ImageFolderSplit":
        return ImageFolderSplit(self.pool, [self.files[i] for i in rows.tolist()], self.labels[rows], self.root)

    def subset(self, limit: int) -> "Split":
        # The quick probe asks for the same subset every epoch: one object, so nothing is rebuilt.
        if limit not in self._subsets:
            self._subsets[limit] = super().subset(limit)
        return self._subsets[limit]

    def fingerprint_update(self, digest: "hashlib._Hash") -> None:
        # Paths (relative to the data root), labels and resolution identify the data; hashing every
        # pixel of 130k JPEGs would take longer than an epoch.
        for path in self.paths:
            digest.update(str(Path(path).relative_to(self.root)).encode())
        digest.update(self.labels.numpy().tobytes())
        digest.update(str(self.pool.dataset.resolution).encode())


def _flag(value: Any) -> bool:
    """A boolean parameter, also as the strings a command line or a config file gives."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise HarnessError(f"task imagenet: gpu_decode={value!r} is not true or false")
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def list_images(folder: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    paths, labels = [], []
    for label, wnid in enumerate(classes):
        files = sorted(p for p in (folder / wnid).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return paths, labels


class ImageNet(Task):
    name = "imagenet"
    version = "2"  # 2: batched SimCLR augmentations (tasks.common.batched_augment), both views in one call
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
    workers: int | None = None  # decoding processes; None: one per CPU this process may use (tasks.common.jpeg)
    # Decode a share of each batch with nvjpeg where the probe finds it working; no effect elsewhere. Not part
    # of the identity, like `workers`: the GPU path's pixels are the CPU path's within one level of rounding.
    gpu_decode = True

    def __init__(self, data_dir: Path | None = None, **params: Any):
        super().__init__(data_dir, **params)
        self.resolution = int(params.get("resolution", self.resolution))
        workers = params.get("workers", self.workers)
        self.workers = default_workers() if workers is None else int(workers)
        self.val_fraction = float(params.get("val_fraction", self.val_fraction))
        self.classes_file = params.get("classes_file", self.classes_file)
        self.gpu_decode = _flag(params.get("gpu_decode", self.gpu_decode))

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
        pool = ImagePool(train_paths + test_paths, self.resolution, self.workers,
                         gpu_decoder=nvjpeg_decoder() if self.gpu_decode else None)
        train = ImageFolderSplit(pool, list(range(len(train_paths))), torch.tensor(train_labels), self.root)
        test = ImageFolderSplit(pool, list(range(len(train_paths), len(pool.paths))), torch.tensor(test_labels),
                                self.root)
        carved = torch.randperm(len(train), generator=torch.Generator().manual_seed(VAL_SEED))
        n_val = max(1, round(self.val_fraction * len(train)))
        return TaskData(train=train.take(carved[n_val:].sort().values), val=train.take(carved[:n_val].sort().values),
                        test=test)

    def augment(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return simclr_batched(x)

    def augment_pair(self, modality: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = simclr_batched(torch.cat([x, x]))
        return views[: len(x)], views[len(x) :]


class ImageNet100(ImageNet):
    name = "imagenet-100"
    description = "ImageNet-100: the classes listed in imagenet/imagenet100.txt (e.g. CMC's list); val is the test split."
    classes_file = "imagenet100.txt"
    nominal_classes = 100
