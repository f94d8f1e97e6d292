"""Image files to uint8 pixel batches, in worker processes started once per run.

Decoding: libjpeg-turbo through simplejpeg for JPEGs (Pillow for other formats, and for the JPEGs
libjpeg-turbo will not convert to RGB, such as CMYK), then one Pillow resampling pass that maps
exactly the centre square the old resize-then-crop kept onto the output: the same pixels as that
path within one intensity level (rounding), without resampling the parts the crop throws away.
Measured on the 2-core CPU, one process, 500x375 JPEGs at 224 px (docs/imagenet.md): the old
path 295-379 images/s, Pillow with the one-pass crop 329-495, simplejpeg with it 345-609.

Only an image whose short side is at least four times the target is decoded at a reduced scale
by the JPEG decoder itself (DCT scaling by 1/2, 1/4 or 1/8, keeping at least twice the target);
the resampling pass that follows still antialiases, and the pixels differ from the full decode's
by well under a level on average (tests/test_imagenet_loader.py states the tolerance). ImageNet's
typical 500x375 at 224 px is decoded in full.

Batches are uint8 (batch, height, width, 3) from the workers; `ImagePool.batches` hands them on as
(batch, 3, height, width) views, which are channels_last in memory: what a convolution on CUDA
wants, and the device converts to float (encoders and augmentations accept uint8).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.api.errors import HarnessError
from harness.running.environment import available_cpus

try:  # a dependency; the fallback keeps a broken wheel from stopping the image track
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    simplejpeg = None

JPEG_SUFFIXES = (".jpeg", ".jpg")


def default_workers() -> int:
    """Decoding processes: one per allowed CPU, less one for the training process where there are
    four or more (on a GPU the main process feeds the device; starving it starves the GPU)."""
    cpus = available_cpus()
    return cpus - 1 if cpus >= 4 else cpus


def _crop_box(width: int, height: int, resolution: int, scale_x: float = 1.0,
              scale_y: float = 1.0) -> tuple[float, float, float, float]:
    """The centre square that resizing the short side to `resolution` and cropping keeps, in the
    coordinates of a decode scaled by (scale_x, scale_y)."""
    s = resolution / min(width, height)
    resized_w, resized_h = max(resolution, round(width * s)), max(resolution, round(height * s))
    left, top = (resized_w - resolution) // 2, (resized_h - resolution) // 2
    fx, fy = width * scale_x / resized_w, height * scale_y / resized_h
    return (left * fx, top * fy, (left + resolution) * fx, (top + resolution) * fy)


def _decode_jpeg(data: bytes, resolution: int) -> Image.Image | None:
    """libjpeg-turbo's decode, DCT-scaled only where the image is at least twice the target; None where
    simplejpeg is missing or cannot give RGB (CMYK), so Pillow tries."""
    if simplejpeg is None:
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        # 1/2, 1/4 or 1/8 while the short side stays at least twice the target: those scales average whole
        # pixel blocks (0.4 levels from the full decode's pixels); the n/8 scales between them differ by 3-6.
        reduce = 1
        while reduce < 8 and min(width, height) // (2 * reduce) >= 2 * resolution:
            reduce *= 2
        scaled = {} if reduce == 1 else {"min_height": -(-height // reduce), "min_width": -(-width // reduce)}
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", **scaled)
    except ValueError:
        return None
    image = Image.fromarray(pixels)
    image.info["source_size"] = (width, height)
    return image


def decode(path: str, resolution: int) -> np.ndarray:
    """(resolution, resolution, 3) uint8: short side resized to `resolution` (bilinear, antialiased), centre crop."""
    image = None
    if path.lower().endswith(JPEG_SUFFIXES):
        with open(path, "rb") as handle:
            image = _decode_jpeg(handle.read(), resolution)
    if image is None:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
            image.info["source_size"] = image.size
    width, height = image.info["source_size"]
    box = _crop_box(width, height, resolution, image.width / width, image.height / height)
    return np.asarray(image.resize((resolution, resolution), Image.BILINEAR, box=box))


class DecodedFiles(Dataset):
    """Picklable (paths and a resolution), so spawned workers rebuild it; decodes whole batches.

    `__getitems__` decodes a batch into one uint8 array, and returns an unreadable file as
    ("error", path, reason) rather than raising: a worker's exception reaches the main process
    wrapped in a traceback, while this lets it stop the run with one line naming the file.
    """

    def __init__(self, paths: list[str], resolution: int):
        self.paths = paths
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(decode(self.paths[i], self.resolution))

    def __getitems__(self, indices: list[int]):
        out = np.empty((len(indices), self.resolution, self.resolution, 3), dtype=np.uint8)
        for j, i in enumerate(indices):
            try:
                out[j] = decode(self.paths[i], self.resolution)
            except Exception as exc:  # noqa: BLE001 - any failure to read a file is reported the same way
                return ("error", self.paths[i], f"{type(exc).__name__}: {exc}".splitlines()[0])
        return torch.from_numpy(out)


def _whole(batch):
    return batch  # __getitems__ already made the batch


class _Order(Sampler[int]):
    """The rows of the current pass, set before each pass; the DataLoader (and its workers) stay."""

    def __init__(self):
        self.rows: list[int] = []

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # decoding is single-threaded; torch's pool in each worker would only contend


@contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned workers inherit the environment: without these, each loads OpenBLAS and OpenMP with a
    thread per core at import, 14 workers x 16 threads on 16 cores (and the import takes longer)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _worker_context():
    """Workers forked from a fork server that imported torch and this module once: starting one costs a
    fork, not an interpreter that imports torch and re-imports the caller's main module (spawn). On the
    H200 machine spawned workers came up one after another at about 4 s each (15 workers: 60 s before
    the first batch, on every pass before workers persisted); forking from a clean server, not from the
    training process, keeps what spawn was chosen for (no fork after torch has run threads or CUDA)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")  # macOS and Windows
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # only while no server runs; a running one already has it
    return context


class ImageFileError(HarnessError):
    """A file a worker could not decode; the message is one line naming it."""


class ImagePool:
    """Every image file of a task and the worker processes that decode them, started once per run.

    One DataLoader with persistent workers over all the task's files; a pass over any split sets the
    sampler's rows and iterates it again, so no pass (epoch, probe, split) starts a process. One pass
    at a time: starting another ends the one before (a pass left unfinished is abandoned).
    """

    def __init__(self, paths: list[str], resolution: int, workers: int):
        self.dataset = DecodedFiles(paths, resolution)
        self.workers = workers
        self.pin_memory = torch.cuda.is_available()  # page-locked batches: asynchronous copies to the GPU
        self._order = _Order()
        self._loader: DataLoader | None = None
        self._batch_size: int | None = None
        self._pass = 0
        self.started = 0  # how many times worker processes were started (tests hold it at one)

    @property
    def paths(self) -> list[str]:
        return self.dataset.paths

    def _loader_for(self, batch_size: int) -> DataLoader:
        # A new batch size (the probe's 1024 after training's 256) builds a new loader; its workers start
        # from the fork server in milliseconds.
        if self._loader is None or self._batch_size != batch_size:
            self.close()
            self._loader = DataLoader(
                self.dataset, batch_size=batch_size, sampler=self._order, num_workers=self.workers,
                collate_fn=_whole, pin_memory=self.pin_memory, persistent_workers=self.workers > 0,
                multiprocessing_context=_worker_context() if self.workers > 0 else None,
                worker_init_fn=_one_thread if self.workers > 0 else None,
                prefetch_factor=4 if self.workers > 0 else None)
            self._batch_size = batch_size
        return self._loader

    def batches(self, rows: list[int], batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 (batch, 3, height, width) pixels of the given files, in order, `batch_size` at a time."""
        if not rows:
            return
        self._pass += 1
        this_pass = self._pass
        self._order.rows = rows
        loader = self._loader_for(batch_size)
        fresh = self.workers > 0 and getattr(loader, "_iterator", None) is None
        with _single_threaded_children():
            iterator = iter(loader)
        self.started += fresh
        for batch in iterator:
            if this_pass != self._pass:
                raise RuntimeError("two passes over one image pool at once; finish one before starting another")
            if isinstance(batch, tuple):
                _, path, reason = batch
                raise ImageFileError(f"cannot decode image {path}: {reason}")
            yield batch.permute(0, 3, 1, 2)

    def close(self) -> None:
        """Stop the workers (they also stop with the process)."""
        if self._loader is not None and getattr(self._loader, "_iterator", None) is not None:
            self._loader._iterator._shutdown_workers()
            self._loader._iterator = None
        self._loader = None
