"""SimCLR's image augmentations as a few batched tensor operations, for the ImageNet tasks.

The kornia pipeline (tasks.common.image_augment) runs each transform as its own module with its own
parameter sampling and per-transform bookkeeping; at 224 px and batch 256 on an H200 it took more
of a training step than the ResNet-18 forward (issue 24: bare loop 6,276 images/s without it, 3,379
with it). Here every parameter of a batch comes from one `torch.rand` call on the device and the
image passes through four kernels: one `grid_sample` (random resized crop and flip), one affine
per-sample brightness/contrast, one per-sample 3x3 colour matrix (saturation, hue, grayscale) and a
separable grouped convolution (Gaussian blur). Nothing reads a value back to the host.

The distribution is SimCLR's (Chen et al. 2020, appendix A), with three stated simplifications:
- the crop's area fraction is uniform in [0.08, 1] and its log aspect ratio uniform in
  [log 3/4, log 4/3]; a side that would leave the image is clipped to it (torchvision instead
  retries up to ten times, then falls back to a centre crop);
- colour jitter applies brightness, contrast, saturation, hue in this fixed order (torchvision draws
  the order per call) and clamps to [0, 1] after contrast and at the end, not after each step;
- hue turns the chroma plane of YIQ by the hue fraction of a full turn, a linear stand-in for the
  HSV hue shift (equal for greys, close for unsaturated colours).
Grayscale p 0.2, blur p 0.5 with sigma uniform in [0.1, 2.0] and a kernel of about a tenth of the
side, flip p 0.5, jitter (0.4, 0.4, 0.4, 0.1) with p 0.8, as in tasks.common.image_augment.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
# RGB -> YIQ; its inverse maps back. Hue turns the (I, Q) plane.
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
# The columns of the one uniform draw per image.
AREA, RATIO, CENTRE_X, CENTRE_Y, FLIP, JITTER, BRIGHTNESS, CONTRAST, SATURATION, HUE, GRAYSCALE, BLUR, SIGMA = range(13)
DRAWS = 13


def _factor(u: torch.Tensor, column: int, jitter: torch.Tensor, strength: float) -> torch.Tensor:
    """A jitter factor uniform in [1 - strength, 1 + strength] where jitter applies, else 1."""
    return torch.where(jitter, 1 + strength * (2 * u[:, column] - 1), torch.ones_like(u[:, column]))


def _colour_matrices(u: torch.Tensor, jitter: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3): saturation, then hue, then grayscale, as one linear map per image."""
    n, device = len(u), u.device
    to_gray = torch.tensor(GRAY, device=device).expand(3, 3)  # every output channel the luma
    saturation = _factor(u, SATURATION, jitter, 0.4)[:, None, None]
    m = saturation * torch.eye(3, device=device) + (1 - saturation) * to_gray
    angle = torch.where(jitter, 0.1 * (2 * u[:, HUE] - 1), torch.zeros_like(u[:, HUE])) * 2 * math.pi
    yiq = torch.tensor(_YIQ, device=device)
    turn = torch.zeros(n, 3, 3, device=device)
    turn[:, 0, 0] = 1
    turn[:, 1, 1], turn[:, 1, 2], turn[:, 2, 1], turn[:, 2, 2] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    m = torch.linalg.inv(yiq) @ turn @ yiq @ m
    return torch.where((u[:, GRAYSCALE] < 0.2)[:, None, None], to_gray @ m, m)


def _blur(images: torch.Tensor, u: torch.Tensor, kernel: int) -> torch.Tensor:
    """Gaussian blur with p 0.5, per-image sigma, as two grouped 1-D convolutions (reflect padding)."""
    n, c, h, w = images.shape
    sigma = 0.1 + 1.9 * u[:, SIGMA]
    taps = torch.arange(kernel, device=images.device, dtype=images.dtype) - kernel // 2
    weights = torch.exp(-(taps[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    weights = weights / weights.sum(dim=1, keepdim=True)
    delta = (taps == 0).to(images.dtype).expand(n, kernel)  # the images not blurred pass through
    weights = torch.where((u[:, BLUR] < 0.5)[:, None], weights, delta).repeat_interleave(c, dim=0)
    flat = images.reshape(1, n * c, h, w)
    pad = kernel // 2
    flat = F.conv2d(F.pad(flat, (0, 0, pad, pad), mode="reflect"), weights[:, None, :, None], groups=n * c)
    flat = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="reflect"), weights[:, None, None, :], groups=n * c)
    return flat.reshape(n, c, h, w)


def simclr_batched(x: torch.Tensor) -> torch.Tensor:
    """One SimCLR view of each image: (B, 3, H, W) uint8 or floats in [0, 1] -> float32 in [0, 1]."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"image augmentation expects (batch, 3, height, width), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    u = torch.rand(n, DRAWS, device=x.device)
    # Random resized crop and flip: an affine map from output to input coordinates ([-1, 1] both).
    area = 0.08 + 0.92 * u[:, AREA]
    ratio = torch.exp(math.log(3 / 4) + math.log(16 / 9) * u[:, RATIO])
    crop_w, crop_h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = crop_w * torch.where(u[:, FLIP] < 0.5, -1.0, 1.0)
    theta[:, 0, 2] = (2 * u[:, CENTRE_X] - 1) * (1 - crop_w)
    theta[:, 1, 1], theta[:, 1, 2] = crop_h, (2 * u[:, CENTRE_Y] - 1) * (1 - crop_h)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    images = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Brightness, then contrast against each image's mean luma; uint8's 1/255 folded into the brightness.
    jitter = u[:, JITTER] < 0.8
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    images = images * (_factor(u, BRIGHTNESS, jitter, 0.4) * scale)[:, None, None, None]
    luma = torch.einsum("bchw,c->b", images.clamp_(0, 1), torch.tensor(GRAY, device=x.device)) / (h * w)
    contrast = _factor(u, CONTRAST, jitter, 0.4)[:, None, None, None]
    images = (images * contrast + (1 - contrast) * luma[:, None, None, None]).clamp_(0, 1)
    images = torch.einsum("bij,bjhw->bihw", _colour_matrices(u, jitter), images).clamp_(0, 1)
    kernel = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)  # odd, about a tenth of the side, as the kornia pipeline
    return _blur(images, u, kernel).clamp_(0, 1)
