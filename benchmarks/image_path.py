"""The ImageNet track's whole image path, measured piece by piece: files, loader, step, epoch.

Shared by benchmarks/test_image_speed.py (pytest-benchmark, the CPU) and benchmarks/gpu_imagenet.py
(the prepared GPU script). Every rate is images per second.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.sidebyside import interleaved
from harness.api.task import TaskData, TensorSplit
from harness.running.train import TrainConfig, fit
from methods.common.losses import nt_xent
from methods.simclr import SimCLR
from tasks.common.batched_augment import simclr_batched
from tasks.imagenet import ImageNet

WIDTH, HEIGHT = 500, 375  # ImageNet's typical size


def _write_one(job: tuple[str, int]) -> int:
    """A 500x375 JPEG of random content: low-frequency colour fields plus fine noise, about 65 KB at
    quality 90 (a natural photo of that size is about 110 KB; pure noise would be 170 KB and decode
    at a third of the speed, which no photo does)."""
    path, seed = job
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    pixels = np.asarray(small.resize((WIDTH, HEIGHT), Image.BICUBIC)).astype(np.int16)
    pixels = np.clip(pixels + rng.integers(-12, 13, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return 1


def write_imagenet_folder(root: Path, train: int, val: int, classes: int = 20, processes: int = 1) -> Path:
    """root/imagenet/{train,val}/<wnid>/*.JPEG with `train` and `val` images in all; returns root."""
    jobs = []
    for split, count in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / "imagenet" / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(c, count, classes):
                jobs.append((str(folder / f"{split}_{i}.JPEG"), len(jobs)))
    if processes > 1:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            pool.map(_write_one, jobs, chunksize=16)
    else:
        for job in jobs:
            _write_one(job)
    return root


def loader_rate(data_dir: Path, workers: int, rows: int, batch: int = 256, resolution: int = 224) -> dict:
    """The task's own loader over the first `rows` training images: the first pass (workers start) and
    the second (workers already running), images/s of each."""
    # The workers alone: on a GPU machine the hybrid decode would otherwise take a share of each batch.
    data = ImageNet(data_dir, workers=workers, resolution=resolution, val_fraction=0.01, gpu_decode=False).load()
    split = data.train.subset(rows)
    out = {"workers": workers, "rows": len(split)}
    for name in ("first_pass", "second_pass"):
        started = time.perf_counter()
        n = sum(len(labels) for _inputs, labels, _rows in split.batches(batch))
        out[f"{name}_per_s"] = round(n / (time.perf_counter() - started), 1)
    data.train.pool.close()
    return out


def simclr_for(resolution: int = 224) -> tuple[ImageNet, SimCLR]:
    task = ImageNet(resolution=resolution, workers=0)  # its modality (ResNet-18) and augmentations only
    return task, SimCLR(task, SimCLR.defaults)


def bare_epoch(method: SimCLR, images: torch.Tensor, batch: int, device: torch.device, bf16: bool,
               optimizer: torch.optim.Optimizer) -> None:
    """The yardstick: the same modules, augmentation, batch, precision and fused AdamW, nothing else
    (no gradient clipping, no loss bookkeeping, no Batch object)."""
    order = torch.randperm(len(images))
    for start in range(0, len(images), batch):
        x = images[order[start : start + batch]].to(device, non_blocking=True)
        views = simclr_batched(torch.cat([x, x]))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z1 = method.projector(method.encoders.joint({"image": views[: len(x)]}))
            z2 = method.projector(method.encoders.joint({"image": views[len(x) :]}))
            loss = nt_xent(z1, z2, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def harness_vs_bare(images: int, batch: int, device: torch.device, bf16: bool, rounds: int,
                    resolution: int = 224) -> dict:
    """One epoch of harness.running.train.fit against one of the bare loop, taking turns, on the same uint8
    images held in host memory (as the loader delivers them): images/s of each and their ratio."""
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, resolution, resolution), dtype=torch.uint8)
    split = TensorSplit({"image": pixels}, torch.zeros(images, dtype=torch.long))
    data = TaskData(split, split, split)
    _task, harness_method = simclr_for(resolution)
    _task, bare_method = simclr_for(resolution)
    config = TrainConfig(epochs=1, batch_size=batch, lr=1e-3, weight_decay=1e-5, device=device, progress=False,
                         bf16=bf16)
    bare_method.to(device)
    if device.type == "cuda":
        bare_method.to(memory_format=torch.channels_last)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(bare_method.parameters(), lr=1e-3, weight_decay=1e-5, fused=fused or None)

    def synced(run):
        def timed():
            run()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return timed

    contenders = {
        "harness": synced(lambda: fit(harness_method, data, config, torch.Generator().manual_seed(0))),
        "bare": synced(lambda: bare_epoch(bare_method, pixels, batch, device, bf16, optimizer)),
    }
    for run in contenders.values():  # warm-up: cuDNN's algorithm search, the allocator, first-call costs
        run()
    medians = interleaved(contenders, rounds)
    return {"images": images, "batch": batch, "bf16": bf16, "device": str(device),
            "harness_per_s": round(images / medians["harness"], 1), "bare_per_s": round(images / medians["bare"], 1),
            "harness_over_bare": round(medians["bare"] / medians["harness"], 3)}


def epoch_from_files(data_dir: Path, workers: int, batch: int, device: torch.device, bf16: bool,
                     epochs: int = 2, gpu_decoder=None) -> dict:
    """`fit` on the imagenet task's training files, end to end (decode, copy, augment, step): images/s
    of each epoch; the first includes the workers' start and cuDNN's warm-up. Decoding on the CPU
    workers alone, or with `gpu_decoder` (a tasks.common.jpeg_gpu.GpuDecoder) taking a share of
    each batch: then also the share reached and the controller's decisions."""
    task = ImageNet(data_dir, workers=workers, val_fraction=0.01, gpu_decode=False)
    data = task.load()
    pool = data.train.pool
    if gpu_decoder is not None:
        pool.use_gpu_decoder(gpu_decoder)
    torch.manual_seed(0)
    method = SimCLR(task, SimCLR.defaults)
    seconds: list[float] = []
    last = [time.perf_counter()]

    def tick(_method, _epoch, _metrics):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        seconds.append(now - last[0])
        last[0] = now

    config = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, weight_decay=1e-5, device=device,
                         progress=False, bf16=bf16)
    fit(method, data, config, torch.Generator().manual_seed(0), tick)
    pool.close()
    out = {"workers": workers, "images": len(data.train), "epoch_s": [round(s, 2) for s in seconds],
           "per_s": [round(len(data.train) / s, 1) for s in seconds]}
    if pool.controller is not None:
        out |= {"decoder": gpu_decoder.name, "share_reached": pool.controller.share,
                "decisions": pool.controller.decisions, "gpu_rows": pool.gpu_rows, "gpu_fallbacks": pool.gpu_fallbacks}
    return out


def gpu_path_rate(data_dir: Path, rows: int, decoder, batch: int = 256, resolution: int = 224) -> dict:
    """The hybrid decode's GPU half alone (tasks.common.jpeg_gpu.decode_on_gpu: one decode call per
    batch, then the float64 Pillow-exact resize), bytes already in memory, second of two passes."""
    from tasks.common.jpeg_gpu import decode_on_gpu

    files = sorted((data_dir / "imagenet" / "train").rglob("*.JPEG"))[:rows]
    blobs = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    paths = [str(f) for f in files]

    def run() -> float:
        started = time.perf_counter()
        for start in range(0, len(blobs), batch):
            decode_on_gpu(blobs[start : start + batch], paths[start : start + batch], resolution, decoder)
        if decoder.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    run()
    return {"rows": len(blobs), "decoder": decoder.name, "per_s": round(len(blobs) / run(), 1)}
