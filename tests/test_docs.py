"""The README's commands and example are what CI and users actually run."""

import ast
import json
import math
import re
from pathlib import Path

import pytest
import torch
from scipy.stats import binom

from harness.api.catalog import METHODS
from harness.api.task import Batch
from harness.results.records import read_record
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


def readme_methods() -> dict[str, str]:
    """The README's example methods: its python blocks that open with `# methods/NAME.py`, by NAME."""
    blocks = re.findall(r"```python\n# methods/(\w+)\.py\n(.*?)```", README, flags=re.S)
    return {name: source for name, source in blocks if name != "__init__"}


def test_the_readme_examples_import_nothing_of_the_project_but_the_interface():
    assert {"my_method", "my_two_view"} <= set(readme_methods())
    for name, source in readme_methods().items():
        imported = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        ours = {module for module in imported if module.split(".")[0] in ("harness", "methods", "tasks")}
        assert ours == {"harness.api"}, (name, imported)


@pytest.mark.parametrize("module", ["my_method", "my_two_view"])
def test_the_readme_examples_run_through_harness_run_and_beat_chance(module, harness_run, tmp_path, monkeypatch):
    source = readme_methods()[module]
    plugins = tmp_path / "readme_plugins"
    plugins.mkdir()
    (plugins / f"readme_{module}.py").write_text(source)  # a module of its own, as a plugin's file would be
    monkeypatch.syspath_prepend(str(plugins))
    name = re.search(r'^    name = "([\w-]+)"', source, flags=re.M).group(1)
    class_name = re.search(r"^class (\w+)\(", source, flags=re.M).group(1)
    monkeypatch.setitem(METHODS._targets, name, f"readme_{module}:{class_name}")  # registered for this test only
    monkeypatch.setattr(METHODS, "_loaded", dict(METHODS._loaded))

    assert harness_run("--method", name, "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1",
                       "--epochs", "1") == 0
    history = json.loads((harness_run.results / "history" / "tiny-synthetic" / f"{name}.json").read_text())
    assert math.isfinite(history["seeds"]["0"][0]["train_loss"])
    record = read_record(harness_run.results / "records" / "tiny-synthetic" / name / "seed0.json")
    labels = TinySynthetic().load().test.labels
    n, majority = len(labels), int(torch.bincount(labels).max())
    # The fewest correct answers a probe that learnt nothing (its best guess: the majority class) reaches
    # with probability under 1e-3.
    beyond_chance = binom.isf(1e-3, n, majority / n) + 1
    assert round(record.metrics["test_acc"] * n) >= beyond_chance, (record.metrics["test_acc"], n, majority)
