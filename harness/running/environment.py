"""Seeds, devices and the description of the machine a record was produced on."""

from __future__ import annotations

import functools
import os
import platform
import random
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from harness import __version__
from harness.api.errors import HarnessError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a run may touch; return a generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if requested not in ("cpu", "cuda"):
        raise HarnessError(f"--device {requested}: choose auto, cpu or cuda")
    return torch.device(requested)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores"


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory for CUDA; otherwise the process's peak resident set (monotone per process)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@functools.cache
def git_commit() -> str:
    """The commit this process's code came from; read once, so a long run cannot stamp a later commit."""
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    return {
        "harness": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


def divide_threads(workers: int) -> int:
    """Torch threads per worker so that workers together use the machine's cores once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
