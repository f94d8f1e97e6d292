"""FactorCL-SUP training speed on the default synthetic setting (24,000 training rows, batch 256).

Target: one epoch with the paper's critics (one hidden layer of 512) in at most 60 s on a
2-core CPU. Critics with two hidden layers (the public code) are reported too; an epoch of
those takes tens of minutes on such a CPU, so they are timed on a few batches and the epoch
time is extrapolated (`extra_info["epoch_s_extrapolated"]`).

Run with `python -m pytest benchmarks --benchmark-only`; outside the normal test run.
"""

import math
import os

import numpy as np
import pytest
import torch

from harness.catalog import METHODS, TASKS
from harness.environment import seed_everything
from harness.train import TrainConfig, fit

EPOCH_BUDGET_S = 60.0
BATCH = 256
DEEP_CRITIC_BATCHES = 3


@pytest.fixture(scope="module")
def synthetic():
    task = TASKS.get("synthetic")()
    return task, task.load()


def one_epoch(task, data, critic_depth: int):
    seed_everything(0)
    cls = METHODS.get("factorcl-sup")
    method = cls(task, cls.defaults | {"critic_hidden": 512, "critic_depth": critic_depth})
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, weight_decay=1e-5, device=torch.device("cpu"),
                         progress=False)
    return fit(method, data, config, torch.Generator().manual_seed(0))


def describe_machine(benchmark) -> None:
    benchmark.extra_info["torch_threads"] = torch.get_num_threads()
    benchmark.extra_info["load_average_1min"] = os.getloadavg()[0]


def test_factorcl_sup_epoch_with_the_papers_critics(benchmark, synthetic):
    task, data = synthetic
    assert len(data.train) == 24000
    stats = benchmark.pedantic(one_epoch, args=(task, data, 1), rounds=2, iterations=1)
    describe_machine(benchmark)
    benchmark.extra_info["batches"] = math.ceil(len(data.train) / BATCH)
    assert np.isfinite(stats.history[0]["train_loss"])
    assert benchmark.stats.stats.mean <= EPOCH_BUDGET_S


def test_factorcl_sup_with_the_public_codes_deeper_critics(benchmark, synthetic):
    task, data = synthetic
    few = type(data)(train=data.train.subset(DEEP_CRITIC_BATCHES * BATCH), val=data.val, test=data.test)
    stats = benchmark.pedantic(one_epoch, args=(task, few, 2), rounds=1, iterations=1)
    describe_machine(benchmark)
    batches = math.ceil(len(data.train) / BATCH)
    benchmark.extra_info["batches_timed"] = DEEP_CRITIC_BATCHES
    benchmark.extra_info["epoch_s_extrapolated"] = benchmark.stats.stats.mean * batches / DEEP_CRITIC_BATCHES
    assert np.isfinite(stats.history[0]["train_loss"])
