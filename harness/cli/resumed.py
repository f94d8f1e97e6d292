"""Whether a `harness run` request is already answered by its records, decided without torch.

A rerun whose seeds are all recorded under the identity it asks for has nothing to train. This
module sees that from the metadata index (harness/cli/index.py), the cached data fingerprints and
the records on disk, so such a run prints its table without importing torch, scikit-learn or
MLflow. Anything short of certainty (a missing, stale or surplus record, a fingerprint not
cached, --force) answers None and the full path decides, loading what it needs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from harness.api.space import from_entry
from harness.cli import index
from harness.cli.requests import RunRequest
from harness.results import fingerprints
from harness.results.publishing.run_report import PairOutcome, nothing_to_train, summary_table
from harness.results.replacing import judge
from harness.running import request
from harness.running.workdir import default_uri

log = logging.getLogger(__name__)


def recorded_pairs(run: RunRequest) -> list[tuple[str, str]] | None:
    """The (task, method) pairs of the request when every seed of each is recorded as asked; else None."""
    if run.force:
        return None
    pairs = []
    for task_name in run.tasks:
        task = index.task_info(task_name)
        fingerprint = _cached_fingerprint(task, run.workdir, run.data_dir)
        if fingerprint is None:
            return None
        for method_name in run.methods:
            entry = index.method_info(method_name)
            method = declaration(entry)
            space, fixed = request.hyperparameters(method, task["default_batch_size"], run.overrides)
            bf16 = _bf16(run, task)
            if bf16 is None:
                return None
            protocol = request.protocol(method.trains, run.epochs or task["default_epochs"], run.trials,
                                        run.seeds, space, fixed, bf16, run.world_size)
            # The plugins' code digests are read from their files now, as the full path would import them.
            identity = request.identity(task["identity"], fingerprint, method, protocol, space, fixed,
                                        task_module=task["module"], method_module=entry["module"])
            judged = judge(run.results, identity, run.seeds)
            if judged.other or len(judged.standing) < run.seeds:  # the full path refuses, keeps or trains
                return None
            pairs.append((task_name, method_name))
    return pairs


def _bf16(run: RunRequest, task: dict[str, Any]) -> bool | None:
    """The precision the full path would choose, or None where only torch can tell (an image task, device
    auto, on a machine with an NVIDIA driver)."""
    if run.bf16 is not None:
        return run.bf16
    kinds = [m["kind"] for m in task["modalities"]]
    if not request.bf16_by_default(kinds, "cuda"):
        return False
    if run.device == "auto":
        return False if not Path("/proc/driver/nvidia").exists() else None
    return run.device == "cuda"


def report_recorded(run: RunRequest, pairs: list[tuple[str, str]]) -> int:
    """What `harness run` ends with, for a request its records already answer."""
    outcomes = [PairOutcome(task, method, "") for task, method in pairs]
    for task, method in pairs:
        log.info(nothing_to_train(f"{task}/{method}"))
    print(summary_table(outcomes, run.results, run.tracking_uri or default_uri(run.workdir)))
    return 0


def declaration(entry: dict[str, Any]) -> request.MethodDeclaration:
    """A method's declaration rebuilt from its index entry, as `harness.running.request` reads a Method class."""
    return SimpleNamespace(
        name=entry["name"], version=entry["version"], trains=entry["trains"], defaults=entry["defaults"],
        search_space={key: from_entry(p) for key, p in entry["search_space"].items()},
        domains={key: from_entry(d) for key, d in entry["domains"].items()})


def _cached_fingerprint(task: dict[str, Any], workdir: Path, data_dir: Path | None) -> str | None:
    source = task["source"]
    if source["kind"] == "files" and data_dir is None:
        return None  # the full path names the missing folder
    key = fingerprints.source_key(task["identity"], source["kind"], source["files"], data_dir)
    return fingerprints.cached(workdir, key)
