"""The ImageNet loader (tasks.common.jpeg): pixels, workers started once, the default worker count,
unreadable files; and the training-side choices of issue 24 (bf16 default, paired views)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.running import request
from harness.cli import main
from harness.api.task import Batch
from tasks.common import jpeg
from tasks.common.batched_augment import simclr_batched
from tasks.imagenet import ImageNet
from tests.test_image_track import WNIDS, write_imagenet


def old_decode(path: str, resolution: int) -> np.ndarray:
    """The decoder before issue 24: Pillow, short side resized (bilinear), then the centre crop."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        scale = resolution / min(image.size)
        size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        return np.asarray(image.crop((left, top, left + resolution, top + resolution)))


def photo_like(path: Path, seed: int, size=(500, 375)) -> None:
    """Smooth colour fields plus fine noise, like benchmarks/image_path.py's files."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    pixels = np.clip(np.asarray(small).astype(np.int16) + rng.integers(-12, 13, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, size in enumerate([(500, 375), (375, 500), (333, 500), (640, 480), (1000, 750)]):
        photo_like(folder / f"{i}.JPEG", i, size)
        paths.append(str(folder / f"{i}.JPEG"))
    return paths


def test_decoder_gives_the_old_pixels_where_it_decodes_in_full(photos):
    # 224 px: no side reaches twice the target, so the image is decoded in full and the one resampling pass
    # covers exactly the old crop; only rounding may differ (measured: at most 1 level).
    for path in photos:
        new, old = jpeg.decode(path, 224).astype(int), old_decode(path, 224).astype(int)
        assert new.shape == old.shape == (224, 224, 3)
        assert np.abs(new - old).max() <= 1


def test_dct_scaled_decode_stays_close_to_the_old_pixels(photos):
    # At 96 px the 640x480 and 1000x750 files are decoded at half scale by libjpeg-turbo (short side
    # still >= 192) and the rest in full. Half-scale decoding averages 2x2 blocks in the DCT domain instead
    # of in pixels, so no bound on the difference follows from arithmetic; the bounds come from the data, set
    # between what the right decoder gives on these fixed files and the smallest error a wrong one makes.
    # Right: mean 0.35-0.4 levels, 99th percentile 1-2, max 3 (measured). Wrong: a crop misplaced by one pixel
    # gives a mean of 14-25, libjpeg-turbo's n/8 scales (which the decoder does not use) 3-6. The mean's bound
    # 0.8 is twice the first and under a third of the second's least; the percentile and maximum bounds sit
    # likewise at about twice the right decoder's.
    for path in photos:
        diff = np.abs(jpeg.decode(path, 96).astype(int) - old_decode(path, 96).astype(int))
        assert diff.mean() <= 0.8 and np.percentile(diff, 99) <= 4 and diff.max() <= 8


def test_workers_start_once_per_run(tmp_path):
    write_imagenet(tmp_path, {"train": 10, "val": 2})
    data = ImageNet(tmp_path, resolution=8, workers=2, val_fraction=0.2).load()
    before = {p.pid for p in multiprocessing.active_children()}
    seen = set()
    for epoch in range(3):  # epochs, the quick probe's subsets, the other splits: one pool serves them all
        generator = torch.Generator().manual_seed(epoch)
        rows = torch.cat([r for _, _, r in data.train.batches(5, shuffle=True, generator=generator)])
        assert sorted(rows.tolist()) == list(range(len(data.train)))
        for split in (data.train.subset(4), data.val.subset(4), data.test):
            list(split.batches(5))
        seen |= {p.pid for p in multiprocessing.active_children()} - before
    assert data.train.pool is data.test.pool and data.train.pool.started == 1
    assert len(seen) == 2  # the same two decoding workers through every pass
    data.train.pool.close()


def test_default_worker_count_follows_the_allowed_cpus(monkeypatch):
    from harness.running import environment

    monkeypatch.setattr(environment, "cgroup_cpu_quota", lambda _root, _membership: None)
    monkeypatch.setattr(jpeg.os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert jpeg.default_workers() == 15 and ImageNet().workers == 15  # one core left to feed the GPU
    monkeypatch.setattr(jpeg.os, "sched_getaffinity", lambda _pid: {0, 3})
    assert jpeg.default_workers() == 2 and ImageNet().workers == 2
    assert ImageNet(workers=1).workers == 1
    monkeypatch.setattr(jpeg.os, "sched_getaffinity", lambda _pid: set(range(16)))
    monkeypatch.setattr(environment, "cgroup_cpu_quota", lambda _root, _membership: 4)  # a container's --cpus 4
    assert jpeg.default_workers() == 3


def test_data_parallel_ranks_on_one_machine_share_its_cpus_among_their_decoders(monkeypatch):
    from harness.running import environment

    monkeypatch.setattr(environment, "cgroup_cpu_quota", lambda _root, _membership: None)
    monkeypatch.setattr(jpeg.os, "sched_getaffinity", lambda _pid: set(range(32)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc-per-node 4
    assert jpeg.default_workers() == 7 and ImageNet().workers == 7  # 8 CPUs a rank: 7 decoders and the rank
    monkeypatch.setattr(jpeg.os, "sched_getaffinity", lambda _pid: {0, 1})
    assert jpeg.default_workers() == 1  # fewer CPUs than ranks: one decoder each still


def test_a_corrupt_jpeg_stops_the_run_with_one_line_naming_it(tmp_path, capsys):
    write_imagenet(tmp_path, {"train": 4, "val": 1})
    bad = tmp_path / "imagenet" / "train" / WNIDS[1] / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    code = main(["run", "--method", "simclr", "--task", "imagenet", "--trials", "1", "--seeds", "1", "--epochs", "1",
                 "--data-dir", str(tmp_path), "--results", str(tmp_path / "r"), "--workdir", str(tmp_path / "w"),
                 "--no-progress", "--allow-dirty", "--set", "batch_size=4"])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "broken.JPEG" in line]
    assert code != 0
    assert len(err) == 1 and "cannot decode image" in err[0] and str(bad) in err[0]


def test_bf16_is_the_default_for_image_tasks_on_cuda_only():
    assert request.bf16_by_default(["image"], "cuda")
    assert not request.bf16_by_default(["image"], "cpu")
    assert not request.bf16_by_default(["tabular", "tokens"], "cuda")
    assert "precision" not in request.protocol(True, 1, 1, 1, {}, {"batch_size": 4})  # float32 records unchanged


def test_imagenet_draws_both_views_in_one_call_and_other_tasks_do_not():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    task = ImageNet(resolution=32, workers=0)
    batch = Batch({"image": x}, torch.zeros(4), torch.arange(4), task.augment, task.augment_pair)
    torch.manual_seed(0)
    v1, v2 = batch.paired_views()
    torch.manual_seed(0)
    both = simclr_batched(torch.cat([x, x]))
    assert torch.equal(v1["image"], both[:4]) and torch.equal(v2["image"], both[4:])
    assert not torch.allclose(v1["image"], v2["image"])
    assert Batch({"image": x}, torch.zeros(4), torch.arange(4), task.augment).paired_views() is None


def test_batched_augmentation_is_seeded_in_range_and_varies():
    x = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8)
    torch.manual_seed(1)
    a = simclr_batched(x)
    torch.manual_seed(1)
    assert torch.equal(a, simclr_batched(x))
    assert a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1 and a.shape == x.shape
    assert not torch.allclose(a, simclr_batched(x))
