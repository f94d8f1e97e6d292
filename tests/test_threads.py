"""Threads come from the CPUs a process may use (affinity mask and cgroup quota), not the machine's count,
and an OMP_NUM_THREADS the user set wins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.running import environment
from harness.running.environment import THREADS_ENV, available_cpus, cgroup_cpu_quota, divide_threads

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_a_process_pinned_to_one_cpu_sees_one():
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                          "from harness.running.environment import available_cpus, divide_threads;"
                          "print(available_cpus(), divide_threads(1), divide_threads(4))"],
                         capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out == ["1", "1", "1"]  # os.cpu_count() said 2 here, and a worker started 2 threads


def write(root: Path, relative: str, text: str) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_text(text)


@pytest.mark.parametrize(("files", "membership", "cpus"), [
    ({"cpu.max": "max 100000\n"}, "0::/\n", None),  # v2, no quota
    ({"cpu.max": "200000 100000\n"}, "0::/\n", 2),  # v2, a container's --cpus 2
    ({"cpu.max": "150000 100000\n"}, "0::/\n", 2),  # 1.5 CPUs: two threads, one of them part-time
    ({"cpu.max": "50000 100000\n"}, "0::/\n", 1),
    # v2 on a host: a Slurm job's group inside a slice, the tighter limit wins wherever it is
    ({"cpu.max": "max 100000\n", "job/cpu.max": "400000 100000\n", "job/step/cpu.max": "max 100000\n"},
     "0::/job/step\n", 4),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "1:cpu:/\n", None),  # v1, none
    ({"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/docker/x\n2:memory:/docker/x\n", 3),  # v1 with the host's path in /proc/self/cgroup
])
def test_the_cgroup_quota_is_read_for_v1_and_v2(tmp_path, files, membership, cpus):
    for relative, text in files.items():
        write(tmp_path / "fs", relative, text)
    write(tmp_path, "cgroup", membership)
    assert cgroup_cpu_quota(tmp_path / "fs", tmp_path / "cgroup") == cpus


def test_the_quota_caps_the_affinity_mask(tmp_path, monkeypatch):
    write(tmp_path / "fs", "cpu.max", "100000 100000\n")
    write(tmp_path, "cgroup", "0::/\n")
    monkeypatch.setattr(environment, "CGROUP_ROOT", tmp_path / "fs")
    monkeypatch.setattr(environment, "CGROUP_MEMBERSHIP", tmp_path / "cgroup")
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert available_cpus() == 1 and divide_threads(1) == 1


def test_a_users_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert divide_threads(1) == 3 and divide_threads(4) == 3
    monkeypatch.setenv(THREADS_ENV, "lots")  # not a count: ignored, as OpenMP itself ignores it
    assert divide_threads(1) == available_cpus()


def test_workers_on_a_machine_with_several_gpus_get_one_each_or_the_devices_listed():
    from harness.running.environment import worker_devices

    assert worker_devices(3, "auto", cuda_count=2) == ["cuda:0", "cuda:1", "cuda:0"]  # in turn
    assert worker_devices(2, "cpu", cuda_count=2) == ["cpu", "cpu"]  # asked for the CPU: stays there
    assert worker_devices(2, "auto", cuda_count=0) == ["auto", "auto"]  # no GPU: auto resolves to the CPU
    assert worker_devices(1, "auto", cuda_count=4) == ["auto"]  # one process keeps its default, cuda (GPU 0)
    assert worker_devices(3, "auto", ("cpu",)) == ["cpu", "cpu", "cpu"]


def test_a_devices_list_this_machine_cannot_serve_is_one_line(capsys, tmp_path):
    import torch

    from harness.cli.app import main

    bad = "cuda:0" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    # One the machine lacks is found when torch looks; a misspelt one is refused by the argument parser.
    for devices, start in ((bad, "error: --device"), ("cpu,tpu", "error: harness run: argument --devices: 'tpu'")):
        code = main(["run", "--method", "clip", "--task", "tiny-synthetic", "--devices", devices, "--workdir",
                     str(tmp_path / "work"), "--results", str(tmp_path / "results")])
        error = capsys.readouterr().err
        assert code == 2 and error.count("\n") == 1 and error.startswith(start), error
    assert not (tmp_path / "work").exists()  # refused before any store was made
    assert main(["run", "--method", "clip", "--task", "tiny-synthetic", "--device", "cpu", "--devices", "cpu"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
