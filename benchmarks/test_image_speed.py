"""Throughput of SimCLR pretraining with ResNet-18 on 224-pixel images, through the harness's own loop.

Run: python -m pytest benchmarks/test_image_speed.py --benchmark-only
Each round is one epoch of `harness.running.train.fit` over a small in-memory set of
random images (augmentations on the device, two views, forward, backward,
AdamW step), so decoding is excluded. Images per second is stored in the
benchmark's extra_info and printed.
"""

from __future__ import annotations

import os

import torch

from harness.api.task import TaskData, TensorSplit
from harness.running.train import TrainConfig, fit
from methods.simclr import SimCLR
from tasks.imagenet import ImageNet

IMAGES = int(os.environ.get("BENCH_IMAGES", "16"))
BATCH = int(os.environ.get("BENCH_BATCH", "16"))
RESOLUTION = 224


def one_epoch(method: SimCLR, data: TaskData, device: torch.device) -> None:
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, weight_decay=1e-5, device=device, progress=False)
    fit(method, data, config, torch.Generator().manual_seed(0))


def test_resnet18_simclr_images_per_second(benchmark):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    task = ImageNet(resolution=RESOLUTION)  # only its modality (ResNet-18, ImageNet stem) and augmentations
    split = TensorSplit({"image": torch.rand(IMAGES, 3, RESOLUTION, RESOLUTION)}, torch.zeros(IMAGES, dtype=torch.long))
    data = TaskData(split, split, split)
    method = SimCLR(task, SimCLR.defaults)
    benchmark.pedantic(one_epoch, args=(method, data, device), rounds=3, iterations=1, warmup_rounds=1)
    per_second = IMAGES / benchmark.stats.stats.mean
    benchmark.extra_info.update({"images_per_second": round(per_second, 2), "images": IMAGES, "batch": BATCH,
                                 "resolution": RESOLUTION, "device": str(device), "threads": torch.get_num_threads()})
    print(f"\nResNet-18 SimCLR, {RESOLUTION}px, batch {BATCH} on {device}: {per_second:.2f} images/s")
    assert per_second > 0
