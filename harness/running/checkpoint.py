"""A seed's whole training state, kept when the run is preempted (harness.running.preemption) and resumed by
the rerun, so that the seed's record is the one an uninterrupted run writes, bit for bit.

The file is `WORKDIR/checkpoints/TASK/METHOD/seedK-DIGEST.pt` (DIGEST: 12 hex digits of the run identity, as the
saved encoders' names): the weights, every optimizer (the auxiliary critics' too), the random streams (torch's,
CUDA's, Python's, numpy's; under data parallel each rank's), the data order's generator as it stood when the
epoch drew its order, the epoch, the step within it, the epoch's running sums, the finished epochs' metrics, and
what the caller adds (the seed's validation curve). Written atomically, read with `torch.load(weights_only=True)`
(tensors and plain data only), and removed once the seed's record is written. A file whose identity, seed or
hyperparameters differ from the run's is never loaded: it is ignored with a warning, and replaced."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.results.identity import identity_digest, plain
from harness.results.records import write_atomically

log = logging.getLogger(__name__)

FORMAT = 1
FOLDER = "checkpoints"
# Tests only: comma-separated step counts of a seed (from its first step, across resumes) after which the seed
# stops as if a signal had come, so a test can preempt at a step it chooses.
STOP_AT_ENV = "HARNESS_TEST_PREEMPT_AT_STEPS"


def checkpoint_path(workdir: Path, identity: dict[str, Any], seed: int) -> Path:
    name = f"seed{seed}-{identity_digest(identity)}.pt"
    return Path(workdir) / FOLDER / identity["task"]["name"] / identity["method"]["name"] / name


@dataclass
class SeedCheckpoint:
    """Where one seed keeps its training state; `state` is what an earlier, preempted run left (None: start)."""

    path: Path
    key: dict[str, Any]  # identity, seed and hyperparameters: what a file must match to be loaded
    state: dict[str, Any] | None = None
    extra: Callable[[], dict[str, Any]] = dict  # the caller's part of the state, read when writing
    stop_at: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def open(cls, workdir: Path, identity: dict[str, Any], seed: int, hparams: dict[str, Any]) -> SeedCheckpoint:
        path = checkpoint_path(workdir, identity, seed)
        key = {"format": FORMAT, "identity": plain(identity), "seed": seed, "hparams": plain(hparams)}
        stops = frozenset(int(n) for n in os.environ.get(STOP_AT_ENV, "").split(",") if n.strip())
        found = cls(path, key, stop_at=stops)
        if path.exists():
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a file we cannot read is one we do not resume from
                log.warning("%s: cannot read this checkpoint (%s); the seed trains from its start", path, exc)
                return found
            if state.get("key") != key:
                log.warning("%s was written for another identity, seed or hyperparameters; ignored, the seed trains "
                            "from its start", path)
            else:
                found.state = state
                log.info("%s seed %d: resuming at epoch %d, step %d from %s", identity["method"]["name"], seed,
                         state["epoch"] + 1, state["step"], path)
        return found

    def due(self, steps_done: int) -> bool:
        return steps_done in self.stop_at

    def write(self, state: dict[str, Any]) -> None:
        """Atomically: a reader (the rerun) finds the previous file or this one, never a part."""
        payload = {**state, "key": self.key, "extra": self.extra()}
        write_atomically(self.path, lambda tmp: torch.save(payload, tmp))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """This process's random streams, as tensors and plain data (what weights_only loading reads)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_tuples(state["python"]))
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))


def _tuples(value: Any) -> Any:
    """random.setstate wants the tuples getstate gave; a stored state may come back with lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
