"""The GPU half of the hybrid decode: JPEG bytes from the workers, decoded by nvjpeg, resized on the GPU.

On the H200 machine of issue 24, 15 CPU workers decoding with libjpeg-turbo fed `fit` at 2,070
images/s while the step alone ran at 3,600-3,950; nvjpeg (torchvision.io.decode_jpeg on the GPU,
a list of 256 at a time) decoded and resized 7,450-9,840 images/s. So the workers hand a share of
each batch's rows over as bytes (tasks.common.jpeg, steered by tasks.common.decode_share) and the
main process decodes them here with one call per batch.

The resize reproduces the CPU path's Pillow resize: Pillow's bilinear filter with antialias support
(the support widens with the reduction), its coefficients computed as Pillow computes them (the box
in C floats, double precision, normalised per output pixel, then rounded to 22-bit fixed point), and
two passes, each rounded half up and clamped to uint8. Applied as matrix products in float64, every
product and partial sum is a multiple of 2^-22 below 2^9, which float64 holds exactly in any
summation order, so each pass is Pillow's to the bit. Pillow 13 runs the vertical pass first for some
sizes and the horizontal first for others (a rule not pinned down here); this path always runs the
horizontal first, as Pillow's Resample.c long did. The two orders differ only in the rounding of the
intermediate image, so the result is within one level of Pillow's everywhere and equal to it for the
sizes where Pillow's order is the same (tests/test_hybrid_decode.py checks both). H100- and
H200-class GPUs run float64 matrix products at tens of TFLOP/s; the resize costs a few hundred
MFLOP per image.

torchvision is imported only inside the probe: the CPU machines here have no usable torchvision, and
nothing changes there.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from tasks.common.jpeg import ImageFileError, _crop_box, decode

PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c, for 8-bit images
CHUNK = 32  # images resized in one batched product: bounds the float64 temporaries (about 100 MB)


@dataclass(frozen=True)
class GpuDecoder:
    """Decodes a list of 1-D uint8 tensors (JPEG files' bytes) into (3, height, width) uint8 tensors on
    `device`, raising where any one fails."""

    decode: Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]
    device: torch.device
    name: str


def _tiny_jpeg() -> torch.Tensor:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 30, 90)).save(buffer, format="JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


@functools.lru_cache(maxsize=1)
def nvjpeg_decoder() -> GpuDecoder | None:
    """nvjpeg through torchvision where it works on this machine, else None: CUDA must be present,
    torchvision importable (its wheel must match torch's build), and a tiny JPEG must decode on the
    GPU to the right shape. Probed once per process."""
    if not torch.cuda.is_available():
        return None
    try:
        from torchvision.io import ImageReadMode, decode_jpeg

        decoded = decode_jpeg([_tiny_jpeg()], mode=ImageReadMode.RGB, device="cuda")
        if tuple(decoded[0].shape) != (3, 8, 16) or decoded[0].device.type != "cuda":
            return None
    except Exception:  # noqa: BLE001 - any failure means: decode on the CPU, as without a GPU
        return None
    return GpuDecoder(functools.partial(_nvjpeg, decode_jpeg, ImageReadMode.RGB), torch.device("cuda"), "nvjpeg")


def _nvjpeg(decode_jpeg, mode, blobs: list[torch.Tensor]) -> list[torch.Tensor]:
    return decode_jpeg(blobs, mode=mode, device="cuda")


def pillow_stand_in(device: str = "cpu") -> GpuDecoder:
    """A decoder with nvjpeg's interface that decodes with Pillow on the CPU: stands in for nvjpeg in
    the tests and in the benchmark's CPU rehearsal (BENCH_FAKE_GPU_DECODE=1)."""
    def run(blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for blob in blobs:
            with Image.open(io.BytesIO(blob.numpy().tobytes())) as image:
                pixels = np.array(image.convert("RGB"))
            out.append(torch.from_numpy(pixels).permute(2, 0, 1).to(device))
        return out
    return GpuDecoder(run, torch.device(device), "pillow stand-in")


def pillow_bilinear_weights(in_size: int, in0: float, in1: float, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64: the coefficients Pillow's bilinear resampling gives each output
    pixel over [in0, in1) of the input (Resample.c, precompute_coeffs and normalize_coeffs_8bpc), as
    exact multiples of 2^-22."""
    # Pillow passes the box as C floats and subtracts them in float before dividing in double.
    in0, in1 = np.float32(in0), np.float32(in1)
    scale = float(np.float32(in1 - in0)) / out_size
    in0 = float(in0)
    filterscale = max(scale, 1.0)  # reducing: the filter widens by the scale (antialiasing)
    support = 1.0 * filterscale  # the bilinear (triangle) filter's support is 1
    centers = in0 + (np.arange(out_size) + 0.5) * scale
    # (int)(v + 0.5) in C truncates toward zero; clamped to the image like Pillow's xmin, xmax.
    lows = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)
    highs = np.minimum(np.trunc(centers + support + 0.5), in_size).astype(np.int64)
    x = np.arange(in_size)
    inside = (x[None, :] >= lows[:, None]) & (x[None, :] < highs[:, None])
    weights = np.where(inside, np.maximum(1.0 - np.abs((x[None, :] - centers[:, None] + 0.5) * (1.0 / filterscale)), 0.0),
                       0.0)
    # Pillow adds the weights left to right; cumsum keeps that order (adding the zeros changes nothing).
    totals = np.cumsum(weights, axis=1)[:, -1:]
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals != 0)
    return np.trunc(weights * (1 << PRECISION_BITS) + 0.5) / (1 << PRECISION_BITS)  # weights are >= 0


@dataclass(frozen=True)
class _Plan:
    wy: np.ndarray  # (resolution, y1 - y0)
    wx: np.ndarray  # (resolution, x1 - x0)
    y0: int
    y1: int
    x0: int
    x1: int


@functools.lru_cache(maxsize=4096)
def _plan(width: int, height: int, resolution: int) -> _Plan:
    """The CPU path's resize (short side to `resolution`, centre square) as two coefficient matrices,
    cut to the rows and columns with any weight: the crop's parts are never computed."""
    left, top, right, bottom = _crop_box(width, height, resolution)
    wx = pillow_bilinear_weights(width, left, right, resolution)
    wy = pillow_bilinear_weights(height, top, bottom, resolution)
    cols, rows = np.flatnonzero(wx.any(axis=0)), np.flatnonzero(wy.any(axis=0))
    x0, x1, y0, y1 = cols[0], cols[-1] + 1, rows[0], rows[-1] + 1
    return _Plan(wy[:, y0:y1], wx[:, x0:x1], int(y0), int(y1), int(x0), int(x1))


@functools.lru_cache(maxsize=4096)
def _matrices(width: int, height: int, resolution: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The plan's matrices on the device, copied there once per image size, not once per batch."""
    plan = _plan(width, height, resolution)
    return torch.from_numpy(plan.wy).to(device), torch.from_numpy(plan.wx).to(device)


def resize_like_pillow(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(n, 3, h, w) uint8 of one size -> (n, resolution, resolution, 3) uint8: the CPU path's resize
    and centre crop (tasks.common.jpeg.decode), on the images' device."""
    _n, _c, height, width = images.shape
    plan = _plan(width, height, resolution)
    wy, wx = _matrices(width, height, resolution, images.device)
    x = images[:, :, plan.y0 : plan.y1, plan.x0 : plan.x1].to(torch.float64)
    # Pillow rounds half up and clamps to uint8 after each pass: floor(v + 0.5) on exact values.
    horizontal = torch.floor(torch.matmul(x, wx.T) + 0.5).clamp_(0, 255)
    vertical = torch.floor(torch.matmul(wy, horizontal) + 0.5).clamp_(0, 255)
    return vertical.to(torch.uint8).permute(0, 2, 3, 1)


def _valid(image) -> bool:
    return isinstance(image, torch.Tensor) and image.dim() == 3 and image.shape[0] == 3 and image.dtype == torch.uint8


def decode_on_gpu(blobs: list[torch.Tensor], paths: list[str], resolution: int, decoder: GpuDecoder
                  ) -> tuple[torch.Tensor, int]:
    """(len(blobs), resolution, resolution, 3) uint8 on the decoder's device, and how many files fell
    back to the CPU. One call decodes the list; where it fails, each file is tried alone, and a file
    the decoder cannot decode (or decodes to other than 3 channels) is decoded on the CPU like the
    workers' rows. A file neither can read raises ImageFileError, one line naming it."""
    try:
        images: list = list(decoder.decode(blobs))
    except Exception:  # noqa: BLE001 - one bad file fails the whole list; find it below
        images = [None] * len(blobs)
    out = torch.empty((len(blobs), resolution, resolution, 3), dtype=torch.uint8, device=decoder.device)
    fallbacks = 0
    for i, blob in enumerate(blobs):
        if _valid(images[i]):
            continue
        try:
            images[i] = decoder.decode([blob])[0]
        except Exception:  # noqa: BLE001
            images[i] = None
        if not _valid(images[i]):
            fallbacks += 1
            images[i] = None
            try:
                out[i] = torch.from_numpy(np.array(decode(paths[i], resolution))).to(decoder.device)
            except Exception as exc:  # noqa: BLE001 - as the workers report an unreadable file
                raise ImageFileError(f"cannot decode image {paths[i]}: "
                                     f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        if image is not None:
            by_size.setdefault(tuple(image.shape[1:]), []).append(i)
    for same in by_size.values():
        for start in range(0, len(same), CHUNK):
            chunk = same[start : start + CHUNK]
            index = torch.tensor(chunk, device=decoder.device)
            out.index_copy_(0, index, resize_like_pillow(torch.stack([images[i] for i in chunk]), resolution))
    return out, fallbacks
