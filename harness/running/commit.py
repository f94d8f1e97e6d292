"""Which commit the running code came from, found without torch (so `harness --version` can say it)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCE_COMMIT_ENV = "HARNESS_SOURCE_COMMIT"


@functools.cache
def git_commit() -> str:
    """The commit this process's code came from; read once, so a long run cannot stamp a later commit.

    A copy of the tree without its .git folder (a container image, a GPU machine that received the
    files alone) cannot tell; there the launcher may declare the commit it copied in
    $HARNESS_SOURCE_COMMIT, else the record says "unknown".
    """
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(SOURCE_COMMIT_ENV, "").strip() or "unknown"
