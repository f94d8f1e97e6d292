"""Failures after a run has started that end one pair, not the command: recognising them and saying
them in one line. Bad input never gets this far; it is refused before any work (exit code 2)."""

from __future__ import annotations

import re

import torch


def out_of_memory(exc: BaseException) -> bool:
    """torch raises OutOfMemoryError on CUDA, but a plain RuntimeError when the CPU allocator fails."""
    text = str(exc).lower()
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def out_of_memory_line(exc: BaseException) -> str:
    """What it tried to allocate (both of torch's messages say it; their other lines are advice or codes),
    what is kept, and the fix."""
    found = re.search(r"tried to allocate (?:[^.;)]|\.(?=\d))+", str(exc), flags=re.IGNORECASE)
    detail = found.group(0) if found else type(exc).__name__
    return (f"out of memory ({detail}); the seeds it finished are kept; lower --set batch_size (or the "
            f"model's sizes), or use a device with more memory")
