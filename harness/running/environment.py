"""Seeds, devices and the description of the machine a record was produced on."""

from __future__ import annotations

import math
import os
import platform
import random
import resource
import sys
from pathlib import Path

import numpy as np
import torch

from harness import __version__
from harness.api.errors import HarnessError
# Callers (and the tests, which pin a commit) reach these through this module; they live apart to load without torch.
from harness.running.commit import PROJECT_ROOT, SOURCE_COMMIT_ENV, git_commit  # noqa: F401
from harness.running.request import DEVICE_FORMS, is_device_name


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a run may touch; return a generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    if not is_device_name(requested):  # the command line refuses these already; a caller from Python may not
        raise HarnessError(f"--device {requested}: choose {DEVICE_FORMS}")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {requested}: no CUDA device is available here; use --device cpu or auto")
    if requested.startswith("cuda:") and int(requested.removeprefix("cuda:")) >= torch.cuda.device_count():
        raise HarnessError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(requested)


def worker_devices(workers: int, device: str, devices: tuple[str, ...] = (),
                   cuda_count: int | None = None) -> list[str]:
    """The device of each of `workers` workers on this machine: the --devices list in turn, else, where the
    request leaves the choice to the harness (auto or cuda) and there are several GPUs, one GPU each
    (cuda:i, in turn when workers outnumber them); otherwise every worker gets `device`. Every worker on
    cuda (GPU 0) made one GPU share a machine's whole sweep while the others idled."""
    if devices:
        for entry in devices:
            resolve_device(entry)
        return [devices[i % len(devices)] for i in range(workers)]
    resolve_device(device)
    count = torch.cuda.device_count() if cuda_count is None else cuda_count
    if device in ("auto", "cuda") and count > 1 and workers > 1:
        return [f"cuda:{i % count}" for i in range(workers)]
    return [device] * workers


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


def versions() -> dict[str, str]:
    return {
        "harness": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": f"{sys.platform}-{platform.machine()}",
    }


THREADS_ENV = "OMP_NUM_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_MEMBERSHIP = Path("/proc/self/cgroup")


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask (taskset, Slurm's binding, a cpuset) and its
    cgroup's CPU quota (a container's or a Slurm job's --cpus), whichever is fewer. os.cpu_count() counts
    the machine's CPUs, so a worker in a 1-CPU container on a 64-core host started 64 threads."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(CGROUP_ROOT, CGROUP_MEMBERSHIP)
    return max(1, min(cpus, quota) if quota is not None else cpus)


def cgroup_cpu_quota(root: Path, membership: Path) -> int | None:
    """CPUs the CFS quota of this process's cgroup and its parents allows (the tightest, rounded up), or
    None without a quota. cgroup v2 keeps "QUOTA PERIOD" (or "max PERIOD") in cpu.max; v1 keeps
    cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us under the cpu controller."""
    limits = []
    for folder in _cgroup_folders(root, membership):
        with_v2 = _read_words(folder / "cpu.max")
        if with_v2 and with_v2[0] != "max" and len(with_v2) == 2:
            limits.append(_cpus(with_v2[0], with_v2[1]))
        quota, period = _read_words(folder / "cpu.cfs_quota_us"), _read_words(folder / "cpu.cfs_period_us")
        if quota and period and quota[0] != "-1":
            limits.append(_cpus(quota[0], period[0]))
    limits = [cpus for cpus in limits if cpus is not None]
    return min(limits) if limits else None


def _cgroup_folders(root: Path, membership: Path) -> list[Path]:
    """The folders that may hold this process's CPU limits: its cgroup's and each parent's, for v2 and for
    v1's cpu controller. Inside a container the mount shows the container's own group at its root while
    /proc/self/cgroup may still name the host's path, so the mount's root is always looked at too."""
    folders = [root, root / "cpu", root / "cpu,cpuacct"]
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return folders
    for line in lines:
        _id, controllers, path = line.split(":", 2)
        if controllers == "":
            base = root
        elif "cpu" in controllers.split(","):
            base = root / controllers
        else:
            continue
        group = base / path.lstrip("/")
        while group != base and base in group.parents:
            folders.append(group)
            group = group.parent
    return folders


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _cpus(quota: str, period: str) -> int | None:
    try:
        cpus = int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return max(1, math.ceil(cpus)) if cpus > 0 else None


def user_threads() -> int | None:
    """The thread count the user set with OMP_NUM_THREADS, if a valid one: it wins over any division."""
    try:
        value = int(os.environ.get(THREADS_ENV, ""))
    except ValueError:
        return None
    return value if value >= 1 else None


def divide_threads(workers: int) -> int:
    """Torch threads per worker so that workers together use the CPUs this process may use once;
    OMP_NUM_THREADS, when the user set it, is each worker's count."""
    return user_threads() or max(1, available_cpus() // max(1, workers))
