"""The smoke suite on a GPU: every method and offline task through the training loop and the probe on
CUDA, in float32 and with bfloat16 autocast. Skipped, with the reason, where torch sees no GPU."""

import numpy as np
import pytest
import torch

from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything
from harness.running.probe import linear_probe
from harness.running.train import TrainConfig, extract_features, fit
from tests.test_smoke import check_probe_output, pairs, small_data  # noqa: F401 - small_data is a fixture

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device visible to torch (a CPU-only build or no GPU)")


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
@pytest.mark.parametrize("task_name, method_name", list(pairs()))
def test_method_trains_and_is_probed_on_cuda(task_name, method_name, bf16, small_data):  # noqa: F811
    device = torch.device("cuda")
    task = TASKS.get(task_name)()
    data = small_data(task)
    cls = METHODS.get(method_name)
    seed_everything(0)
    method = cls(task, {"lr": 1e-3, "weight_decay": 0.0, **cls.defaults})
    if cls.trains:
        config = TrainConfig(epochs=1, batch_size=32, lr=1e-3, weight_decay=0.0, device=device, progress=False,
                             bf16=bf16)
        history = fit(method, data, config, torch.Generator().manual_seed(0)).history
        assert np.isfinite(history[0]["train_loss"])
        assert all(p.device.type == "cuda" for p in method.parameters())
    features = [extract_features(method, getattr(data, s), device) for s in ("train", "val", "test")]
    assert np.isfinite(features[0][0]).all()
    scores = linear_probe(*features, device=device)
    check_probe_output(task_name, method_name, scores.test_acc, features[2][1])
