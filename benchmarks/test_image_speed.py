"""Throughput of SimCLR pretraining with ResNet-18 on 224-pixel images, through the harness's own loop.

Run: python -m pytest benchmarks/test_image_speed.py --benchmark-only -s
Each round is one epoch of `harness.running.train.fit` over a small in-memory set of
random images (augmentations on the device, two views, forward, backward,
AdamW step), so decoding is excluded. Images per second is stored in the
benchmark's extra_info and printed.
"""

from __future__ import annotations

import os
import statistics

import pytest
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


# -- The whole image path (issue 24): files, loader, step against a bare loop, epoch from files ------------

FILES = int(os.environ.get("BENCH_FILES", "512"))
LOADER_ROUNDS = 3  # each worker count's rate is the median of three turns, taken in alternation


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory):
    from benchmarks.image_path import write_imagenet_folder

    return write_imagenet_folder(tmp_path_factory.mktemp("imagenet"), FILES, 40, processes=2)


def test_loader_at_1_2_and_all_allowed_workers(benchmark, imagenet_folder):
    """Second-pass images/s (workers running) at 224 px, the worker counts taking turns over LOADER_ROUNDS
    rounds. Target on a 2-core CPU: two workers >= 1.6x one (a ratio: the issue's 150 images/s for one worker
    is recorded, not asserted, as an absolute rate on a shared machine measures its load)."""
    from benchmarks.image_path import loader_rate
    from harness.running.environment import available_cpus

    counts = sorted({1, 2, available_cpus()})

    def rounds():
        seen = {w: [] for w in counts}
        for _ in range(LOADER_ROUNDS):
            for w in counts:
                seen[w].append(loader_rate(imagenet_folder, w, FILES, 64))
        return seen

    seen = benchmark.pedantic(rounds, rounds=1, iterations=1)
    rates = {w: statistics.median(r["second_pass_per_s"] for r in runs) for w, runs in seen.items()}
    benchmark.extra_info.update({f"workers_{w}_per_s": r for w, r in rates.items()}
                                | {"one_worker_target_per_s": 150, "load": os.getloadavg()[0]})
    print(f"\nloader images/s (medians of {LOADER_ROUNDS} rounds): {rates}")
    assert rates[2] >= 1.6 * rates[1]


def test_harness_epoch_against_the_bare_loop(benchmark):
    """fit's epoch against a bare loop with the same modules, augmentation, batch and precision, in turns."""
    from benchmarks.image_path import harness_vs_bare

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images = int(os.environ.get("BENCH_STEP_IMAGES", "128" if device.type == "cpu" else "2560"))  # 4 steps: 2 left fixed costs in
    batch = int(os.environ.get("BENCH_STEP_BATCH", "32" if device.type == "cpu" else "256"))
    out = benchmark.pedantic(lambda: harness_vs_bare(images, batch, device, device.type == "cuda", rounds=3),
                             rounds=1, iterations=1)
    benchmark.extra_info.update(out | {"load": os.getloadavg()[0]})
    print(f"\nharness vs bare: {out}")
    assert out["harness_over_bare"] >= 0.9


def test_fit_epoch_from_files(benchmark, imagenet_folder):
    """`fit` end to end from the JPEGs (decode in the task's workers, augment, step): images/s per epoch."""
    from benchmarks.image_path import epoch_from_files
    from tasks.common.jpeg import default_workers

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = benchmark.pedantic(lambda: epoch_from_files(imagenet_folder, default_workers(), 32, device,
                                                      device.type == "cuda"), rounds=1, iterations=1)
    benchmark.extra_info.update(out | {"load": os.getloadavg()[0]})
    print(f"\nfit from files: {out}")
