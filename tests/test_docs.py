"""The README's commands and example are what CI and users actually run."""

import re
from pathlib import Path

import torch

from harness.api.task import Batch
from harness.running.pair import Pair, resolve_hyperparameters
from tests.fixtures import TinySynthetic

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    setup, test = bash_blocks()[:2]
    assert "harness run --method clip --task synthetic" in setup
    assert "pytest" in test
    assert test.strip() in (ROOT / ".ci" / "run").read_text()


def test_the_readme_example_method_trains():
    source = re.search(r"```python\n(# methods/my_method.py.*?)```", README, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(source, "README example", "exec"), namespace)
    task = TinySynthetic()
    method = namespace["MyMethod"](task, dict(namespace["MyMethod"].defaults))
    data = task.load().train
    inputs, labels, rows = next(data.batches(32))
    loss = method.loss(Batch(inputs, labels, rows))
    loss.backward()
    assert torch.isfinite(loss) and method.encode(inputs).shape == (32, 256)
    resolve_hyperparameters(Pair(task, namespace["MyMethod"]), {})  # its domains hold its defaults and space
