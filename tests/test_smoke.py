"""Every registered method crossed with every offline task whose requirements it meets: a tiny run."""

import numpy as np
import pytest
import torch

from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything
from harness.running.probe import linear_probe
from harness.running.train import TrainConfig, extract_features, fit

ROWS = {"train": 128, "val": 64, "test": 64}


def setting_variant(name: str) -> bool:
    """A registered task whose class only renames its registered parent and changes its setting (the dose-response
    and assignment variants of shapes-superclasses): its code is the parent's, which the smoke run covers."""
    cls = TASKS.get(name)
    parents = {TASKS.get(other) for other in TASKS.names() if other != name}
    own = {key for key in vars(cls) if not key.startswith("_")}
    return cls.__mro__[1] in parents and own <= {"name", "setting", "description"}


OFFLINE = [t for t in TASKS.names() if TASKS.get(t)().source.kind != "files" and not setting_variant(t)]


def pairs():
    for task_name in OFFLINE:
        task = TASKS.get(task_name)()
        for method_name in METHODS.names():
            cls = METHODS.get(method_name)
            if cls.requirements.unmet(task) is None and method_name != "diverges-on-odd-seeds":
                yield pytest.param(task_name, method_name, id=f"{task_name}-{method_name}")


@pytest.fixture(scope="module")
def small_data():
    cache = {}

    def load(task):
        if task.name not in cache:
            data = task.load()
            for split, rows in ROWS.items():
                setattr(data, split, getattr(data, split).subset(rows))
            cache[task.name] = data
        return cache[task.name]

    return load


# Tasks whose label is a linear threshold of the raw inputs: the synthetic generators' default label is
# 1[mean of the latents >= 0] and each modality is its latents times a fixed full-rank matrix (tasks.synthetic),
# so the two modalities together determine every latent linearly; single-modality's label is 1[x_0 > 0].
LINEAR_IN_RAW_INPUTS = ("synthetic", "synthetic-public-views", "tiny-synthetic", "single-modality")
ABOVE_CHANCE_SD = 4  # a probe blind to the features passes 4 binomial sd above chance with probability < 4e-5


def train_and_probe(task_name: str, method_name: str, small_data, bf16: bool = False):
    task = TASKS.get(task_name)()
    data = small_data(task)
    cls = METHODS.get(method_name)
    seed_everything(0)
    hparams = {"lr": 1e-3, "weight_decay": 0.0, **cls.defaults}
    if "guide_epochs" in hparams:  # a guide trains on the task's pool, not the subset: one epoch checks the path
        hparams["guide_epochs"] = 1
    method = cls(task, hparams)
    before = [p.detach().clone() for p in method.parameters()]
    autocast_seen = []
    loss = method.loss

    def watched_loss(batch):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return loss(batch)

    method.loss = watched_loss
    if cls.trains:
        config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                             progress=False, bf16=bf16)
        history = fit(method, data, config, torch.Generator().manual_seed(0)).history
        assert np.isfinite(history[0]["train_loss"])
        assert any(not torch.equal(b, p) for b, p in zip(before, method.parameters())), "no parameter moved"
        assert autocast_seen and set(autocast_seen) == {bf16}, "the loss ran outside the autocast asked for"
    features = [extract_features(method, getattr(data, s), torch.device("cpu")) for s in ("train", "val", "test")]
    assert features[0][0].shape[0] == len(data.train) and np.isfinite(features[0][0]).all()
    return linear_probe(*features), features[2][1]


@pytest.mark.parametrize("task_name, method_name", list(pairs()))
def test_method_trains_and_is_probed(task_name, method_name, small_data):
    scores, test_labels = train_and_probe(task_name, method_name, small_data)
    check_probe_output(task_name, method_name, scores.test_acc, test_labels)


def check_probe_output(task_name: str, method_name: str, test_acc: float, test_labels: np.ndarray) -> None:
    """In [0, 1]; and raw features on a task linear in them beat chance (also used by tests/test_cuda.py)."""
    assert 0.0 <= test_acc <= 1.0
    if method_name == "raw-features" and task_name in LINEAR_IN_RAW_INPUTS:
        # Chance: a probe that ignores the features scores at most the majority class's share in expectation
        # (exactly that share if it predicts one class), with a binomial sd of at most sqrt(1/4n) on n test
        # rows. Linearly separable inputs must beat it by ABOVE_CHANCE_SD of those (0.25 at n = 64).
        chance = np.bincount(test_labels).max() / len(test_labels)
        sd = np.sqrt(0.25 / len(test_labels))
        assert test_acc > chance + ABOVE_CHANCE_SD * sd, (test_acc, chance, sd)


def test_every_linearly_separable_task_is_in_the_smoke_run():
    """The chance check above runs for each of them: none may drop out of the parametrization unseen."""
    assert set(LINEAR_IN_RAW_INPUTS) <= set(OFFLINE)


# bfloat16 autocast runs on the CPU too (torch.autocast("cpu")): every method once on a tabular and on an image
# task, through the same training loop as on an accelerator (tests/test_cuda.py runs the whole grid there).
BF16_TASKS = ("tiny-synthetic", "shapes-captions-tiny")


@pytest.mark.parametrize("task_name, method_name",
                         [p for p in pairs() if p.values[0] in BF16_TASKS and METHODS.get(p.values[1]).trains])
def test_method_trains_under_bf16_autocast_on_the_cpu(task_name, method_name, small_data):
    scores, _ = train_and_probe(task_name, method_name, small_data, bf16=True)
    assert 0.0 <= scores.test_acc <= 1.0
