"""FactorCL's augmentations by modality kind, and the encoders methods get for each kind."""

import pytest
import torch

from harness.api.catalog import TASKS
from harness.api.task import Modality
from methods.common.encoders import DEFAULT_FAMILY, build_encoder
from methods.common.sequence_encoders import SequenceTransformer
from tasks.common.augment import augment_by_kind, drop_steps, mixup, permute_steps, sequence_views, static_features
from tests.test_multibench import BENCHMARKS, write


def test_permuting_steps_reorders_each_sequence_without_changing_its_steps():
    x = torch.arange(4 * 10 * 3, dtype=torch.float).view(4, 10, 3)
    y = permute_steps(x)
    assert not torch.equal(x, y)
    for a, b in zip(x, y):
        assert torch.equal(a[a[:, 0].argsort()], b[b[:, 0].argsort()])


def test_dropping_steps_zeroes_a_fifth_of_each_sequence():
    y = drop_steps(torch.ones(6, 50, 4))
    assert ((y.abs().sum(-1) == 0).sum(dim=1) == 10).all()


def test_sequence_views_mix_transforms_per_sample_and_keep_shape():
    torch.manual_seed(0)
    x = torch.randn(64, 50, 8)
    y = sequence_views(x)
    unchanged = (y == x).flatten(1).all(dim=1)
    # identity for some samples, not all: each picks it with p 1/4, so all or none of 64 has odds
    # (3/4)^64 + (1/4)^64 = 1e-8
    assert y.shape == x.shape and 0 < unchanged.sum() < 64


def test_mixup_stays_between_rows_and_static_views_keep_shape():
    x = torch.stack([torch.zeros(5), torch.ones(5)]).repeat(8, 1)
    y = mixup(x)
    assert y.min() >= 0 and y.max() <= 1 and not torch.equal(x, y)
    assert static_features(torch.randn(32, 5)).shape == (32, 5)


def test_image_views_take_uint8_and_return_augmented_images_in_unit_range():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    y = augment_by_kind("image", x)
    assert y.dtype == torch.float32 and y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    # The identity gives 0; a crop resamples uniform noise, whose values differ from the pixel they land on
    # by E|U - V| = 1/3 (less where bilinear resizing averages neighbours). Over 24576 values the mean's
    # sd is ~0.002, so 0.05 tells any real augmentation from none.
    assert (y - x.float() / 255).abs().mean() > 0.05


@pytest.mark.parametrize("kind, shape, vocab", [("tabular", (5,), None), ("timeseries", (24, 12), None),
                                                ("sequence", (50, 20), None), ("image", (3, 32, 32), None),
                                                ("tokens", (16,), 50)])
def test_every_kind_has_a_default_encoder_giving_one_embedding_per_row(kind, shape, vocab):
    assert kind in DEFAULT_FAMILY
    encoder = build_encoder(Modality("m", kind, shape, vocab_size=vocab), 24)
    x = torch.randint(0, vocab, (3, *shape)) if vocab else torch.randn(3, *shape)
    out = encoder(x)
    assert out.shape == (3, 24) and torch.isfinite(out).all()


def test_the_sequence_transformer_ignores_zero_padding():
    torch.manual_seed(0)
    encoder = SequenceTransformer(6, 12, 8, layers=2).eval()
    x = torch.randn(2, 12, 6)
    padded = x.clone()
    padded[:, 8:] = 0.0
    with torch.no_grad():
        # Zero steps at the end are masked out: the same as never having been there.
        # 12 steps with 4 masked and 8 steps take different kernels, whose sums of O(1) terms differ in order
        # (masked weights are exactly 0): a few ulps, inside torch.testing's float32 rtol 1.3e-6, atol 1e-5.
        assert torch.allclose(encoder(padded), encoder(x[:, :8]), rtol=1.3e-6, atol=1e-5)
        # Four real steps more move O(1) outputs by O(0.1); 1e-3 is a hundred times the rounding above.
        assert not torch.allclose(encoder(x), encoder(x[:, :8]), atol=1e-3)
        assert torch.isfinite(encoder(torch.zeros(2, 12, 6))).all()  # no real step at all: no NaN


@pytest.mark.parametrize("task_name", BENCHMARKS)
def test_each_benchmark_augments_every_modality(task_name, tmp_path):
    write(task_name, tmp_path)
    task = TASKS.get(task_name)(data_dir=tmp_path)
    inputs, _, _ = next(task.load().train.batches(16))
    torch.manual_seed(0)
    for name, x in inputs.items():
        view = task.augment(name, x)
        assert view.shape == x.shape and not torch.equal(view.to(x.dtype), x), name
