"""A third-party method written against the smallest interface (name, search_space, defaults, loss,
encode; no display_name, no domains, as plugins were written before 0.2.0), installed through an entry
point as pip would install it, runs end to end in a real `harness run` process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
import torch.nn.functional as F

from harness.method import Method
from harness.space import Float
from methods.common.encoders import ModalityEncoders


class XplugAlign(Method):
    name = "xplug-align"
    search_space = {"margin": Float(0.05, 0.5)}
    defaults = {"margin": 0.2, "embed_dim": 32}

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoders = ModalityEncoders(task, hparams["embed_dim"])

    def loss(self, batch):
        a, b = self.encoders(batch.inputs).values()
        return F.relu(self.hparams["margin"] - F.cosine_similarity(a, b)).mean()

    def encode(self, inputs):
        return self.encoders.joint(inputs)
'''


def install(site: Path) -> None:
    """What `pip install` leaves for a package with an entry point: the module and its dist-info."""
    (site / "xplug").mkdir(parents=True)
    (site / "xplug" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "xplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[harness.methods]\nxplug-align = xplug:XplugAlign\n")


def test_a_plugin_without_domains_or_display_name_runs_with_one_warning_per_inferred_domain(tmp_path):
    install(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]),
               HARNESS_CACHE_DIR=str(tmp_path / "cache"))  # a fresh metadata index, which must list the plugin
    done = subprocess.run(
        [sys.executable, "-m", "tests.run_harness", "run", "--method", "xplug-align", "--task", "tiny-synthetic",
         "--trials", "2", "--seeds", "1", "--epochs", "1", "--set", "embed_dim=16", "--no-progress",
         "--allow-dirty", "--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("deprecated:")]
    assert warnings == [
        "deprecated: method xplug-align declares no domain for hyperparameter 'embed_dim'; using a whole number "
        ">= 1, inferred from its default and range (declare it in `domains`)",
        "deprecated: method xplug-align declares no domain for hyperparameter 'margin'; using a number > 0, "
        "inferred from its default and range (declare it in `domains`)"]
    record = json.loads((tmp_path / "results" / "records" / "tiny-synthetic" / "xplug-align" / "seed0.json").read_text())
    assert record["method"]["display_name"] == "xplug-align"  # the name stands in for a missing display name
    assert record["hparams"]["embed_dim"] == 16 and 0.05 <= record["hparams"]["margin"] <= 0.5
    assert 0 <= record["metrics"]["test_acc"] <= 1


def test_an_inferred_domain_refuses_a_value_outside_it_in_one_line(tmp_path):
    install(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]),
               HARNESS_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run(
        [sys.executable, "-m", "tests.run_harness", "run", "--method", "xplug-align", "--task", "tiny-synthetic",
         "--set", "embed_dim=0", "--no-progress", "--allow-dirty", "--results", str(tmp_path / "results"),
         "--workdir", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --set embed_dim=0: embed_dim must be a whole number >= 1; pass one, for example "
                      "--set embed_dim=32"]
    assert not (tmp_path / "results").exists()
