"""FactorCL-SUP training speed on the default synthetic setting (24,000 training rows, batch 256).

* One pair critic's forward and backward over all 256 x 256 pairs, hidden 512: the CPU's fused
  kernels (hand-written C, `methods/common/pair_kernels.c`) against the same function compiled by
  inductor (what the CPU ran before them, and what an accelerator runs), the blockwise eager form
  (the reference) and the plain form that materializes the 256 x 256 x 512 tensor, side by side.
* A whole epoch with the paper's critics (one hidden layer of 512): today's code (fused critics,
  fused AdamW) against the code before it (eager critics, per-tensor AdamW), side by side in one
  process, over EPOCH_ROUNDS interleaved rounds. The epoch's own time is recorded beside the 60 s budget
  the speed issue set for a 2-core CPU (`extra_info["epoch_budget_s"]`), not asserted: an absolute time
  on a shared machine measures its load as much as the code.
* A whole epoch of today's code against the code the speed issue measured (BEFORE, checked out
  beside this one), each in its own process, at the same work per step: one CLUB-critic step, as
  version 1 took (version 2 takes `club_steps`=5 by default; that is a change of method, not of speed),
  also over EPOCH_ROUNDS interleaved rounds.
* Critics with two hidden layers (the public code) are timed on a few batches and the epoch
  time extrapolated (`extra_info["epoch_s_extrapolated"]`).

Compilation is paid before timing and reported as `compile_warmup_s`.
Run with `python -m pytest benchmarks/test_factorcl_speed.py --benchmark-only`.
"""

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.sidebyside import interleaved, record
from harness.api.catalog import METHODS, TASKS
from harness.running import train as training
from harness.running.environment import seed_everything
from harness.running.train import TrainConfig, fit
from methods.common import mi

ROOT = Path(__file__).resolve().parents[1]
EPOCH_BUDGET_S = 60.0  # the speed issue's budget for one epoch on a 2-core CPU: recorded beside the time
EPOCH_ROUNDS = 3  # a median of three alternating epochs: one slow round (load) cannot decide a ratio
BATCH = 256
HIDDEN = 512
DEEP_CRITIC_BATCHES = 3


@pytest.fixture(scope="module")
def synthetic():
    task = TASKS.get("synthetic")()
    return task, task.load()


def one_epoch(task, data, critic_depth: int, fused: bool = True):
    seed_everything(0)
    cls = METHODS.get("factorcl-sup")
    method = cls(task, cls.defaults | {"critic_hidden": HIDDEN, "critic_depth": critic_depth})
    for module in method.modules():
        if isinstance(module, mi.ConcatCritic):
            module.fused = fused
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, weight_decay=1e-5, device=torch.device("cpu"),
                         progress=False)
    return fit(method, data, config, torch.Generator().manual_seed(0))


def test_one_critic_forward_and_backward(benchmark):
    torch.manual_seed(0)
    ha, hb, w = (torch.randn(BATCH, HIDDEN) * 0.5, torch.randn(BATCH, HIDDEN) * 0.5, torch.randn(HIDDEN) * 0.05)
    grad = torch.randn(BATCH, BATCH)

    def run(kernel):
        def once():
            leaves = [t.clone().requires_grad_() for t in (ha, hb, w)]
            kernel(*leaves).backward(grad)
        return once

    def materialized(a, b, v):
        return (a[:, None, :] + b[None]).relu() @ v

    def inductor(a, b, v):
        return mi._FusedPairReLUDot.apply(mi.COMPILED, a, b, v)

    started = time.perf_counter()
    run(mi.pair_relu_dot)()
    warmup = time.perf_counter() - started
    assert mi.NATIVE.available, "no working C compiler: the fused kernels cannot be measured here"
    started = time.perf_counter()
    assert mi.COMPILED.ready(ha, hb, w), "inductor cannot compile here"
    inductor_warmup = time.perf_counter() - started
    medians = interleaved({"fused": run(mi.pair_relu_dot), "inductor": run(inductor),
                           "blockwise_eager": run(mi._PairReLUDot.apply), "materialized_eager": run(materialized)},
                          rounds=7)
    benchmark.pedantic(run(mi.pair_relu_dot), rounds=5, iterations=1)
    record(benchmark, medians, baseline="blockwise_eager")
    for other in ("inductor", "materialized_eager"):
        benchmark.extra_info[f"speedup_fused_vs_{other}"] = round(medians[other] / medians["fused"], 2)
    benchmark.extra_info["build_or_load_s"] = round(warmup, 2)
    benchmark.extra_info["inductor_compile_s"] = round(inductor_warmup, 1)
    # The issue's target: 8x the eager form. It timed the one that materializes B x B x H; the blockwise
    # eager form (the reference the tests compare against) is faster, and the target holds against it too.
    assert medians["materialized_eager"] / medians["fused"] >= 8
    assert medians["blockwise_eager"] / medians["fused"] >= 8


def test_factorcl_sup_epoch_now_vs_before(benchmark, synthetic, monkeypatch):
    task, data = synthetic
    assert len(data.train) == 24000
    last = len(data.train) % BATCH or BATCH
    started = time.perf_counter()  # compile both batch shapes (full and the epoch's last) before timing
    one_epoch(task, type(data)(train=data.train.subset(BATCH + last), val=data.val, test=data.test), 1)
    warmup = time.perf_counter() - started

    def before():
        with monkeypatch.context() as patch:  # the optimizer as it was: one small op per tensor
            patch.setattr(training, "_adamw", lambda params, lr, weight_decay, device: torch.optim.AdamW(
                params, lr=lr, weight_decay=weight_decay))
            return one_epoch(task, data, 1, fused=False)

    medians = interleaved({"now": lambda: one_epoch(task, data, 1), "before": before}, rounds=EPOCH_ROUNDS)
    stats = benchmark.pedantic(one_epoch, args=(task, data, 1), rounds=1, iterations=1)
    record(benchmark, medians, baseline="before")
    benchmark.extra_info["compile_warmup_s"] = round(warmup, 1)
    benchmark.extra_info["batches"] = math.ceil(len(data.train) / BATCH)
    benchmark.extra_info["epoch_budget_s"] = EPOCH_BUDGET_S
    assert np.isfinite(stats.history[0]["train_loss"])
    assert medians["before"] / medians["now"] >= 5  # the issue's target for a whole epoch


def test_factorcl_sup_with_the_public_codes_deeper_critics(benchmark, synthetic):
    task, data = synthetic
    few = type(data)(train=data.train.subset(DEEP_CRITIC_BATCHES * BATCH), val=data.val, test=data.test)
    stats = benchmark.pedantic(one_epoch, args=(task, few, 2), rounds=1, iterations=1)
    record(benchmark, {}, baseline="")
    batches = math.ceil(len(data.train) / BATCH)
    benchmark.extra_info["batches_timed"] = DEEP_CRITIC_BATCHES
    benchmark.extra_info["epoch_s_extrapolated"] = benchmark.stats.stats.mean * batches / DEEP_CRITIC_BATCHES
    assert np.isfinite(stats.history[0]["train_loss"])


# Runs in either checkout (their APIs agree on this much): compile/warm up on two batches, then time an epoch.
EPOCH_SCRIPT = """
import sys, time, torch
from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything
from harness.running.train import TrainConfig, fit
task = TASKS.get("synthetic")(); data = task.load()
cls = METHODS.get("factorcl-sup")
hparams = cls.defaults | {k: v for k, v in {"club_steps": 1}.items() if k in cls.defaults}
config = TrainConfig(epochs=1, batch_size=256, lr=1e-3, weight_decay=1e-5, device=torch.device("cpu"), progress=False)
last = len(data.train) % 256 or 256
seed_everything(0)
fit(cls(task, hparams), type(data)(train=data.train.subset(256 + last), val=data.val, test=data.test), config,
    torch.Generator().manual_seed(0))
seed_everything(0)
method = cls(task, hparams)
started = time.perf_counter()
fit(method, data, config, torch.Generator().manual_seed(0))
print(time.perf_counter() - started)
"""


def test_factorcl_sup_epoch_now_vs_the_code_the_issue_measured(benchmark, before_checkout):
    seconds: dict[str, list[float]] = {"before": [], "now": []}

    def epoch_in(checkout: Path, name: str):
        def run():
            done = subprocess.run([sys.executable, "-c", EPOCH_SCRIPT], cwd=checkout, check=True, capture_output=True,
                                  text=True)
            seconds[name].append(float(done.stdout.split()[-1]))
        return run

    interleaved({"before": epoch_in(before_checkout, "before"), "now": epoch_in(ROOT, "now")}, rounds=EPOCH_ROUNDS)
    medians = {name: sorted(times)[len(times) // 2] for name, times in seconds.items()}  # the epoch alone
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timings are the side-by-side epochs above
    record(benchmark, medians, baseline="before")
    assert medians["before"] / medians["now"] >= 5  # the issue's target for a whole epoch
