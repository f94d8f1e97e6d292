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

Hybrid decode, where a GPU decoder works (tasks.common.jpeg_gpu.nvjpeg_decoder): the workers pass a
share of each batch's rows on as the files' bytes instead of decoding them; the main process decodes
those on the GPU in one call and resizes them there as Pillow does here, and the batch is put
together on the GPU. The share lives in shared memory, read by each worker as it starts a batch, and
is steered by tasks.common.decode_share from the workers' busy time that each batch reports. The
GPU decodes in full what the workers would DCT-scale (a short side four times the target or more),
so those rows differ from the workers' by the DCT scaling's 0.4 levels on average; the others agree
within one level (tests/test_hybrid_decode.py).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from harness.api.errors import HarnessError
from harness.running.environment import available_cpus
from tasks.common.decode_share import START, ShareController

try:  # a dependency; the fallback keeps a broken wheel from stopping the image track
    import simplejpeg
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    simplejpeg = None

JPEG_SUFFIXES = (".jpeg", ".jpg")
GPU_COLORSPACES = ("YCbCr", "Gray", "RGB")  # nvjpeg gives these as RGB; CMYK and YCCK stay on the CPU


def default_workers() -> int:
    """Decoding processes: one per allowed CPU, less one for the training process where there are
    four or more (on a GPU the main process feeds the device; starving it starves the GPU). The
    data-parallel ranks torchrun started on this machine (LOCAL_WORLD_SIZE) share its CPUs: each
    counts its share, or 4 ranks on 32 CPUs would start 124 decoders."""
    cpus = max(1, available_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
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


def decode(path: str, resolution: int, data: bytes | None = None) -> np.ndarray:
    """(resolution, resolution, 3) uint8: short side resized to `resolution` (bilinear, antialiased), centre crop.
    `data`: the file's bytes where they were read already."""
    image = None
    if path.lower().endswith(JPEG_SUFFIXES):
        if data is None:
            with open(path, "rb") as handle:
                data = handle.read()
        image = _decode_jpeg(data, resolution)
    if image is None:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
            image.info["source_size"] = image.size
    width, height = image.info["source_size"]
    box = _crop_box(width, height, resolution, image.width / width, image.height / height)
    return np.asarray(image.resize((resolution, resolution), Image.BILINEAR, box=box))


def _gpu_can_take(data: bytes) -> bool:
    """A JPEG whose header libjpeg-turbo reads and whose colours nvjpeg turns into RGB; the rest (and
    every file where simplejpeg is missing) is decoded here, where an unreadable one is reported."""
    if simplejpeg is None:
        return False
    try:
        return simplejpeg.decode_jpeg_header(data)[2] in GPU_COLORSPACES
    except ValueError:
        return False


class DecodedFiles(Dataset):
    """Picklable (paths, a resolution, the shared share), so spawned workers rebuild it; decodes whole batches.

    `__getitems__` decodes a batch into one uint8 array, and returns an unreadable file as
    ("error", path, reason) rather than raising: a worker's exception reaches the main process
    wrapped in a traceback, while this lets it stop the run with one line naming the file.
    `share` (one float64 in shared memory, set by the main process) is the fraction of each batch's
    rows to pass on as bytes for the GPU; 0 without a GPU decoder.
    """

    def __init__(self, paths: list[str], resolution: int):
        self.paths = paths
        self.resolution = resolution
        self.share = torch.zeros(1, dtype=torch.float64).share_memory_()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(decode(self.paths[i], self.resolution))

    def __getitems__(self, indices: list[int]):
        """{"pixels": the decoded rows (n, r, r, 3) uint8, "cpu_rows": their places in the batch, "blob":
        the bytes of the rows left to the GPU end to end, "ends": where each file's bytes end, "byte_rows":
        their places, "files": their indices in `paths`, "share": the share read, "busy_s": the seconds
        this took}; tensors, so the bytes too travel through shared memory, not the result pipe."""
        started = time.perf_counter()
        share = float(self.share[0])
        wanted = int(share * len(indices) + 0.5)
        blobs: dict[int, bytes] = {}
        try:
            for j in reversed(range(len(indices))):  # the last rows that qualify: a fixed choice
                if len(blobs) == wanted:
                    break
                path = self.paths[indices[j]]
                if path.lower().endswith(JPEG_SUFFIXES):
                    with open(path, "rb") as handle:
                        data = handle.read()
                    if _gpu_can_take(data):
                        blobs[j] = data
        except OSError as exc:
            return ("error", path, f"{type(exc).__name__}: {exc}".splitlines()[0])
        cpu_rows = [j for j in range(len(indices)) if j not in blobs]
        out = np.empty((len(cpu_rows), self.resolution, self.resolution, 3), dtype=np.uint8)
        for k, j in enumerate(cpu_rows):
            try:
                out[k] = decode(self.paths[indices[j]], self.resolution)
            except Exception as exc:  # noqa: BLE001 - any failure to read a file is reported the same way
                return ("error", self.paths[indices[j]], f"{type(exc).__name__}: {exc}".splitlines()[0])
        byte_rows = sorted(blobs)
        joined = bytearray(b"".join(blobs[j] for j in byte_rows))
        blob = torch.frombuffer(joined, dtype=torch.uint8) if joined else torch.empty(0, dtype=torch.uint8)
        return {"pixels": torch.from_numpy(out), "cpu_rows": torch.tensor(cpu_rows, dtype=torch.long), "blob": blob,
                "ends": torch.tensor(np.cumsum([len(blobs[j]) for j in byte_rows]), dtype=torch.long),
                "byte_rows": torch.tensor(byte_rows, dtype=torch.long),
                "files": torch.tensor([indices[j] for j in byte_rows], dtype=torch.long),
                "share": share, "busy_s": time.perf_counter() - started}


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

    With a GPU decoder (`gpu_decoder`, or `use_gpu_decoder` later) and workers, a share of each batch
    is decoded on the GPU (module docstring), and batches holding such rows come out on its device.
    """

    def __init__(self, paths: list[str], resolution: int, workers: int, gpu_decoder=None):
        self.dataset = DecodedFiles(paths, resolution)
        self.workers = workers
        self.pin_memory = torch.cuda.is_available()  # page-locked batches: asynchronous copies to the GPU
        self._order = _Order()
        self._loader: DataLoader | None = None
        self._batch_size: int | None = None
        self._pass = 0
        self.started = 0  # how many times worker processes were started (tests hold it at one)
        self.gpu_decoder = None
        self.controller: ShareController | None = None
        self.gpu_rows = 0  # rows decoded by the GPU decoder, and those of them that fell back to the CPU
        self.gpu_fallbacks = 0
        if gpu_decoder is not None:
            self.use_gpu_decoder(gpu_decoder)

    def use_gpu_decoder(self, decoder, start: float = START) -> None:
        """Hand a share of each batch, starting at `start`, to `decoder` (a tasks.common.jpeg_gpu.GpuDecoder);
        without workers there is no CPU side to relieve, and nothing changes."""
        if self.workers == 0:
            return
        self.gpu_decoder = decoder
        self.controller = ShareController(self.workers, start)
        self.dataset.share[0] = self.controller.share

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
        arrived = None
        for batch in iterator:
            if this_pass != self._pass:
                raise RuntimeError("two passes over one image pool at once; finish one before starting another")
            if isinstance(batch, tuple):
                _, path, reason = batch
                raise ImageFileError(f"cannot decode image {path}: {reason}")
            before, arrived = arrived, time.perf_counter()
            if self.controller is not None and before is not None:  # a pass's first batch waited for its start
                self.dataset.share[0] = self.controller.observe(batch["share"], batch["busy_s"], arrived - before)
            yield self._assembled(batch)

    def _assembled(self, batch: dict) -> torch.Tensor:
        """The batch's rows in order, (n, 3, r, r) channels_last: the workers' array as it came where they
        decoded every row, else put together on the GPU decoder's device."""
        if len(batch["byte_rows"]) == 0:
            return batch["pixels"].permute(0, 3, 1, 2)
        from tasks.common.jpeg_gpu import decode_on_gpu  # only where a GPU decoder is in use

        device, resolution = self.gpu_decoder.device, self.dataset.resolution
        blobs = list(torch.tensor_split(batch["blob"], batch["ends"][:-1].tolist()))
        decoded, fallbacks = decode_on_gpu(blobs, [self.paths[i] for i in batch["files"].tolist()], resolution,
                                           self.gpu_decoder)
        self.gpu_rows += len(blobs)
        self.gpu_fallbacks += fallbacks
        rows = len(batch["byte_rows"]) + len(batch["cpu_rows"])
        out = torch.empty((rows, resolution, resolution, 3), dtype=torch.uint8, device=device)
        out.index_copy_(0, batch["byte_rows"].to(device), decoded)
        if len(batch["cpu_rows"]):
            out.index_copy_(0, batch["cpu_rows"].to(device), batch["pixels"].to(device, non_blocking=True))
        return out.permute(0, 3, 1, 2)

    def close(self) -> None:
        """Stop the workers (they also stop with the process)."""
        if self._loader is not None and getattr(self._loader, "_iterator", None) is not None:
            self._loader._iterator._shutdown_workers()
            self._loader._iterator = None
        self._loader = None
