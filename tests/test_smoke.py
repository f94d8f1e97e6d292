"""Every registered method crossed with every offline task whose requirements it meets: a tiny run."""

import numpy as np
import pytest
import torch

from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything
from harness.running.probe import linear_probe
from harness.running.train import TrainConfig, extract_features, fit

ROWS = {"train": 128, "val": 64, "test": 64}
OFFLINE = [t for t in TASKS.names() if TASKS.get(t)().source.kind != "files"]


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


@pytest.mark.parametrize("task_name, method_name", list(pairs()))
def test_method_trains_and_is_probed(task_name, method_name, small_data):
    task = TASKS.get(task_name)()
    data = small_data(task)
    cls = METHODS.get(method_name)
    seed_everything(0)
    method = cls(task, {"lr": 1e-3, "weight_decay": 0.0, **cls.defaults})
    before = [p.detach().clone() for p in method.parameters()]
    if cls.trains:
        config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, weight_decay=0.0, device=torch.device("cpu"),
                             progress=False)
        history = fit(method, data, config, torch.Generator().manual_seed(0)).history
        assert np.isfinite(history[0]["train_loss"])
        assert any(not torch.equal(b, p) for b, p in zip(before, method.parameters())), "no parameter moved"
    features = [extract_features(method, getattr(data, s), torch.device("cpu")) for s in ("train", "val", "test")]
    assert features[0][0].shape[0] == len(data.train) and np.isfinite(features[0][0]).all()
    scores = linear_probe(*features)
    assert 0.0 <= scores.test_acc <= 1.0
