"""The image track's data: ImageNet folders, the offline shapes-captions task, encoders and augmentations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api.errors import HarnessError
from harness.api.task import Modality
from harness.cli import main
from methods.common.encoders import build_encoder
from tasks.common.augment import augment_by_kind
from tasks.common.image_augment import MASK_ID, PAD_ID, WORD_DROP, WORD_MASK
from tasks.imagenet import ImageNet, ImageNet100
from tasks.shapes import ShapesCaptions, ShapesSetting
from tasks.superclasses import SHAPES, SUPERCLASSES, ShapeSuperclasses, SuperclassSetting, shape_mask

WNIDS = ("n01440764", "n01443537", "n01484850")


def write_imagenet(root: Path, per_class: dict[str, int]) -> None:
    """ILSVRC-2012 layout: imagenet/{train,val}/<wnid>/*.JPEG; each class a distinct flat colour."""
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for c, wnid in enumerate(WNIDS):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((20 + 3 * i, 30, 3), 60 * c + 40, dtype=np.uint8)  # odd sizes test the crop
                pixels += rng.integers(0, 10, pixels.shape, dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=95)


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_imagenet(root, {"train": 10, "val": 2})
    return root


def test_imagenet_splits_labels_and_pixels(imagenet_dir):
    task = ImageNet(imagenet_dir, resolution=16, workers=0, val_fraction=0.2)
    data = task.load()
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 6)
    assert task.num_classes == 3
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    inputs, labels, rows = next(data.test.batches(6))
    image = inputs["image"]
    assert image.shape == (6, 3, 16, 16) and image.dtype == torch.uint8  # floats only on the device
    # Class c was painted 60c + 40 + uniform noise 0..9 (mean 4.5): decoding must keep that order and scale.
    # The tolerance, in levels of 255: the noise averaged over the >= 20 x 20 source pixels the 16 x 16 crop
    # reads (sd 2.87 / 20, 4 sd: 0.6), JPEG's DC quantization at quality 95 (step 2 on 8 x the block mean:
    # 0.13), the YCbCr round trip's rounding (R = Y + 1.402 Cr, B = Y + 1.772 Cb, each rounded: at most 2.3)
    # and the integer IDCT's (0.5): 3.5 levels; the decoder's single resize (tests/test_imagenet_loader.py
    # holds it to the old path within 1 level) makes 4.5, far inside the classes' 60 apart.
    means = image.float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, (60 * labels + 44.5).float(), atol=4.5)
    assert rows.tolist() == list(range(6))


def test_imagenet_validation_is_carved_from_train_with_a_fixed_seed(imagenet_dir):
    first = ImageNet(imagenet_dir, resolution=8, workers=0, val_fraction=0.2).load()
    second = ImageNet(imagenet_dir, resolution=8, workers=0, val_fraction=0.2).load()
    assert first.val.paths == second.val.paths
    assert not set(first.val.paths) & set(first.train.paths)
    assert all("/train/" in p for p in first.val.paths)
    assert first.fingerprint() == second.fingerprint()


def test_imagenet_decodes_in_spawned_workers(imagenet_dir):
    data = ImageNet(imagenet_dir, resolution=8, workers=1).load()
    shuffled = list(data.test.batches(4, shuffle=True, generator=torch.Generator().manual_seed(1)))
    rows = torch.cat([r for _, _, r in shuffled])
    assert sorted(rows.tolist()) == list(range(6)) and rows.tolist() != list(range(6))
    labels = torch.cat([y for _, y, _ in shuffled])
    assert torch.equal(labels, data.test.labels[rows])
    assert shuffled[0][0]["image"].shape == (4, 3, 8, 8)


def test_imagenet_100_reads_its_class_subset(imagenet_dir):
    (imagenet_dir / "imagenet" / "imagenet100.txt").write_text(f"{WNIDS[2]}\n{WNIDS[0]}\n\n")
    task = ImageNet100(imagenet_dir, resolution=8, workers=0)
    data = task.load()
    assert task.num_classes == 2
    assert len(data.test) == 4 and set(data.test.labels.tolist()) == {0, 1}
    assert all(WNIDS[1] not in p for p in data.train.paths + data.test.paths)


def test_imagenet_100_subset_naming_an_absent_class_fails_clearly(tmp_path):
    write_imagenet(tmp_path, {"train": 1, "val": 1})
    (tmp_path / "imagenet" / "imagenet100.txt").write_text("n99999999\n")
    with pytest.raises(HarnessError, match="n99999999"):
        ImageNet100(tmp_path, workers=0).load()


def test_missing_imagenet_folder_is_a_one_line_error(tmp_path, capsys):
    code = main(["run", "--method", "simclr", "--task", "imagenet", "--data-dir", str(tmp_path),
                 "--results", str(tmp_path / "r"), "--workdir", str(tmp_path / "w"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "imagenet/train" in err[0] and "image-net.org" in err[0]


def test_missing_validation_class_folder_names_it(tmp_path):
    write_imagenet(tmp_path, {"train": 1, "val": 1})
    (tmp_path / "imagenet" / "val" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG").unlink()
    (tmp_path / "imagenet" / "val" / WNIDS[1]).rmdir()
    with pytest.raises(HarnessError, match=WNIDS[1]):
        ImageNet(tmp_path, workers=0).load()


def tiny_shapes() -> ShapesCaptions:
    task = ShapesCaptions()
    task.setting = ShapesSetting(n_train=24, n_val=12, n_test=12, size=16)
    return task


def test_shapes_captions_are_deterministic_for_a_seed():
    first, second = tiny_shapes().load(), tiny_shapes().load()
    assert first.fingerprint() == second.fingerprint()
    other = tiny_shapes()
    other.setting = ShapesSetting(n_train=24, n_val=12, n_test=12, size=16, seed=1)
    assert other.load().fingerprint() != first.fingerprint()


def test_shapes_captions_name_the_class():
    """Text must carry the label: a caption's shape and colour words, when present, match the class."""
    from tasks.shapes import COLOUR_WORDS, COLOURS, SHAPE_WORDS, SHAPES, vocabulary

    task = ShapesCaptions()
    task.setting = ShapesSetting(n_train=200, n_val=1, n_test=1)
    data = task.load().train
    words = vocabulary()
    named = 0
    for ids, label in zip(data.inputs["caption"], data.labels.tolist()):
        caption = {words[i] for i in ids.tolist() if i != PAD_ID}
        shape, colour = SHAPES[label // len(COLOURS)], list(COLOURS)[label % len(COLOURS)]
        wrong_shapes = {w for s, ws in SHAPE_WORDS.items() if s != shape for w in ws}
        wrong_colours = {w for c, ws in COLOUR_WORDS.items() if c != colour for w in ws}
        assert not caption & (wrong_shapes | wrong_colours)
        named += bool(caption & set(SHAPE_WORDS[shape])) and bool(caption & set(COLOUR_WORDS[colour]))
    # Mostly named, sometimes not: informative but no oracle. Each word is kept with probability 1 - drop, so a
    # caption names both with p = (1 - drop)^2 (0.81); the share of 200 is binomial, within 4 sd of p.
    p = (1 - task.setting.drop_class_word) ** 2
    assert abs(named / 200 - p) < 4 * (p * (1 - p) / 200) ** 0.5 and 0 < p < 1
    images = data.inputs["image"]
    assert images.shape == (200, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


@pytest.mark.parametrize("family, shape", [
    ("resnet18", (3, 64, 64)), ("resnet18-small", (3, 32, 32)), ("resnet50", (3, 64, 64)),
    ("resnet50-small", (3, 16, 16)), ("small-cnn", (3, 32, 32)),
])
def test_image_encoders_embed_to_the_asked_width(family, shape):
    encoder = build_encoder(Modality("image", "image", shape, encoder=family), 24)
    assert encoder(torch.rand(2, *shape)).shape == (2, 24)


def test_resnet_sizes_match_the_published_architectures():
    """Without their 1000-way classifier, ResNet-18 has 11.18M and ResNet-50 23.51M parameters."""
    counts = {}
    for family in ("resnet18", "resnet50"):
        encoder = build_encoder(Modality("image", "image", (3, 32, 32), encoder=family), 1)
        counts[family] = sum(p.numel() for n, p in encoder.named_parameters() if not n.startswith("head"))
    assert round(counts["resnet18"] / 1e6, 2) == 11.18 and round(counts["resnet50"] / 1e6, 2) == 23.51


@pytest.mark.parametrize("family", ["bag-of-words", "text"])
def test_text_encoders_handle_padding(family):
    # eval(): the token Transformer uses dropout, which would make the two calls differ.
    encoder = build_encoder(Modality("caption", "tokens", (6,), vocab_size=20, encoder=family), 8).eval()
    tokens = torch.tensor([[5, 6, 7, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    padded_more = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])[:, :6]
    out = encoder(tokens)
    assert out.shape == (2, 8) and out.isfinite().all()
    # A batch of 1 and one of 2 may take different GEMM kernels, whose sums differ in order: float32
    # rounding of terms of size ~1 (the encoder's weights and activations), a few ulps, well inside
    # torch.testing's float32 tolerances (rtol 1.3e-6, atol 1e-5); padding handled wrongly moves it by ~0.1.
    torch.testing.assert_close(encoder(padded_more)[0], out[0])


@pytest.mark.parametrize("family", ["bag-of-words", "text"])
def test_token_encoders_name_a_missing_vocabulary(family):
    with pytest.raises(ValueError, match="caption declares no vocab_size"):
        build_encoder(Modality("caption", "tokens", (6,), encoder=family), 8)


def test_default_families_by_kind():
    from methods.common.vision_text import BagOfWordsEncoder, SmallCNN

    assert isinstance(build_encoder(Modality("i", "image", (3, 32, 32)), 4), SmallCNN)
    assert isinstance(build_encoder(Modality("t", "tokens", (5,), vocab_size=9), 4), BagOfWordsEncoder)


def test_image_augmentation_keeps_shape_device_range_and_varies():
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(0)
    a = augment_by_kind("image", x)
    b = augment_by_kind("image", x)
    torch.manual_seed(0)
    again = augment_by_kind("image", x)
    assert a.shape == x.shape and a.device == x.device and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a, b) and torch.equal(a, again)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_image_augmentation_stays_on_the_gpu():
    assert augment_by_kind("image", torch.rand(2, 3, 16, 16, device="cuda")).device.type == "cuda"


def test_word_dropout_and_masking_touch_only_real_words():
    tokens = torch.randint(2, 50, (64, 10))
    tokens[:, 7:] = PAD_ID
    torch.manual_seed(0)
    out = augment_by_kind("tokens", tokens)
    assert out.shape == tokens.shape and out.dtype == tokens.dtype
    assert (out[:, 7:] == PAD_ID).all()
    changed = out != tokens
    assert ((out[changed] == PAD_ID) | (out[changed] == MASK_ID)).all()
    # Each real word is changed with p = WORD_DROP + WORD_MASK (0.2; tokens 2..49 are never PAD_ID or
    # MASK_ID already): binomial over the 64 x 7 real words, within 4 sd of p.
    p, real = WORD_DROP + WORD_MASK, 64 * 7
    assert abs(changed[:, :7].float().mean() - p) < 4 * (p * (1 - p) / real) ** 0.5


def tiny_superclasses(seed: int = 0) -> ShapeSuperclasses:
    task = ShapeSuperclasses()
    task.setting = SuperclassSetting(n_train=240, n_val=12, n_test=12, seed=seed, pool_size=240)
    return task


def test_superclass_task_is_deterministic_for_a_seed_and_its_published_size():
    first, second = tiny_superclasses().load(), tiny_superclasses().load()
    assert first.fingerprint() == second.fingerprint()
    assert tiny_superclasses(seed=1).load().fingerprint() != first.fingerprint()
    full = ShapeSuperclasses.setting
    assert full.n_train >= 5000 and full.n_test >= 2000 and ShapeSuperclasses().num_classes == len(SUPERCLASSES)


def test_superclass_pool_holds_every_member_and_the_target_no_caption():
    """The caption rate and words are tests/test_guide_pool.py's; here the shapes of the generated rows."""
    task = tiny_superclasses()
    images, members = task.generate()
    pool_images, captions, pool_members = task.guide_pool().generate()
    assert set(members.tolist()) == set(pool_members.tolist()) == set(range(12))
    assert [m.name for m in task.modalities] == ["image"] and captions.shape == (240, 12)
    for found in (images, pool_images):
        assert found.shape[1:] == (3, 32, 32) and 0 <= found.min() and found.max() <= 1


def test_superclass_members_look_different_and_look_alikes_are_split():
    """By mask overlap, the ten most alike shape pairs all straddle two superclasses, and members of one
    superclass overlap less on average than shapes of different ones: pixels cannot find the classes."""
    import itertools

    u, v = np.meshgrid(np.linspace(-1.2, 1.2, 97), np.linspace(-1.2, 1.2, 97))
    masks = {s: shape_mask(s, u, v) for s in SHAPES}
    superclass = {s: c for c, members in SUPERCLASSES.items() for s in members}
    overlap = {(a, b): float((masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum())
               for a, b in itertools.combinations(SHAPES, 2)}
    most_alike = sorted(overlap, key=overlap.get, reverse=True)[:10]
    assert all(superclass[a] != superclass[b] for a, b in most_alike)
    within = [o for (a, b), o in overlap.items() if superclass[a] == superclass[b]]
    across = [o for (a, b), o in overlap.items() if superclass[a] != superclass[b]]
    assert np.mean(within) < np.mean(across)


def test_superclass_views_crop_at_least_a_quarter_and_vary():
    from tasks.superclasses import CROP_SCALE, views_pipeline

    assert CROP_SCALE[0] >= 0.25
    torch.manual_seed(0)
    boxes = views_pipeline(32, 32)[0].forward_parameters(torch.Size((2000, 3, 32, 32)))["src"]
    area = (boxes[:, 1, 0] - boxes[:, 0, 0] + 1) * (boxes[:, 2, 1] - boxes[:, 1, 1] + 1) / 32**2
    # A quarter of the image, up to pixel rounding: an area of 256 pixels at the extreme aspect ratio 4/3 has
    # sides 18.5 and 13.9, each rounded down by less than a pixel: (18.5 - 1)(13.9 - 1) / 1024 = 0.220.
    # (SimCLR's default 0.08 would reach far below it in 2,000 draws.)
    smallest = (math.sqrt(256 * 4 / 3) - 1) * (math.sqrt(256 * 3 / 4) - 1) / 32**2
    assert area.min() >= smallest and area.max() == 1.0
    task = tiny_superclasses()
    x = task.load().train.inputs["image"][:8]
    torch.manual_seed(0)
    a, b = task.augment("image", x), task.augment("image", x)
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1 and not torch.allclose(a, b)
