"""The classifier MI estimator against known MI, and `harness diagnose` end to end."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from harness.cli import main
from harness.results import diagnostics
from harness.results.diagnostics import TABLE_FILE, ClassifierMI, _reference_column

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "reference" / "factorcl_table1_mi_bits.csv"
FAST = ClassifierMI(hidden=64, epochs=15, batch_size=256)


def correlated(n: int, nats: float, generator: torch.Generator, dim: int = 2):
    rho = math.sqrt(1 - math.exp(-2 * nats / dim))
    z = torch.randn(n, dim, generator=generator)
    return z, rho * z + math.sqrt(1 - rho**2) * torch.randn(n, dim, generator=generator)


def test_the_classifier_estimate_recovers_a_known_mi_in_bits():
    generator = torch.Generator().manual_seed(0)
    z, w = correlated(6000, 1.5, generator)
    truth_bits = 1.5 / math.log(2)
    estimate = FAST.bits(z[:4000], w[:4000], z[4000:], w[4000:])
    # The mean of the true log-ratio over 2,000 held-out rows has sd sqrt(2 rho^2 / 2,000) = 0.028 nats
    # (0.04 bits; the information density of a Gaussian pair has variance rho^2 per axis). The margins are
    # far wider: they are targets for what a 15-epoch, 64-unit classifier must learn (0.5 bits short at most)
    # and overfit (0.3 bits over at most), not derived; the mean of a classifier's logit is no bound on MI.
    assert truth_bits - 0.5 < estimate < truth_bits + 0.3, (estimate, truth_bits)


def test_the_classifier_estimate_is_near_zero_for_independent_variables(monkeypatch):
    """Under independence paired and shuffled rows are indistinguishable, so the estimate (the mean of the
    classifier's logit over held-out paired rows) is noise, bounded by the spread of the logits it averages.

    The old fixed 0.15 bits was one machine's margin; how far noise reaches depends on how much the classifier
    fitted the noise (the spread of its logits), which this reads off the classifier itself."""
    made = []

    class Recorded(nn.Sequential):
        def __init__(self, *layers):
            super().__init__(*layers)
            made.append(self)

    monkeypatch.setattr(diagnostics, "nn", SimpleNamespace(Sequential=Recorded, Linear=nn.Linear, ReLU=nn.ReLU))
    generator = torch.Generator().manual_seed(0)
    z, w = torch.randn(6000, 2, generator=generator), torch.randn(6000, 3, generator=generator)
    estimate = FAST.bits(z[:4000], w[:4000], z[4000:], w[4000:])
    (classifier,) = made
    (_, z_test), (_, w_test) = diagnostics._standardized(z[:4000], z[4000:]), diagnostics._standardized(w[:4000], w[4000:])
    with torch.no_grad():
        logits = classifier(torch.cat([z_test, w_test], 1)).squeeze(1).double()
    # The estimate is that mean, in bits (a float32 mean of 2,000 terms: within 2,000 eps32 of its size).
    assert estimate == pytest.approx(float(logits.mean()) / math.log(2), abs=2000 * 1.2e-7 * float(logits.abs().mean()))
    # Its distance from 0: the held-out mean's standard error, sd(f) / sqrt(2,000), plus the classifier's own
    # offset. The last layer's bias, fitted by cross-entropy on as many paired as shuffled training rows that
    # nothing tells apart, centres the logits on the training rows, up to the noise of a mean over the 4,000
    # rows of a class: sd(f) / sqrt(4,000). Each allowed 4 standard errors (a two-sided 6e-5 chance each).
    sd = float(logits.std())
    bound_bits = 4 * sd * (1 / math.sqrt(2000) + 1 / math.sqrt(4000)) / math.log(2)
    assert abs(estimate) < bound_bits, (estimate, bound_bits)
    # Not vacuous: the bound is far below the 1.5 nats (2.2 bits) the known-MI test above recovers.
    assert bound_bits < 0.5, bound_bits


def test_paper_columns_are_found_by_display_name():
    columns = pd.read_csv(REFERENCE, comment="#").columns
    assert _reference_column("Cross+Self", "Z1", columns) == "CrossSelf_Z1"
    assert _reference_column("FactorCL-SUP", "ZU2", columns) == "FactorCL_ZU2"
    assert _reference_column("CLIP", "Z1", columns) is None


def test_diagnose_writes_estimates_and_the_table_beside_the_paper(tmp_path, tracking_uri):
    results = tmp_path / "results"
    code = main(["diagnose", "--method", "raw-features", "--task", "tiny-synthetic", "--results", str(results),
                 "--workdir", str(tmp_path / "work"), "--tracking-uri", tracking_uri, "--no-progress",
                 "--reference", str(REFERENCE)])
    assert code == 0
    found = json.loads((results / "diagnostics" / "tiny-synthetic" / "raw-features.json").read_text())
    bits = {r["extra"]: r["bits"] for r in found["estimates_bits"]}
    assert set(bits) == {"shared", "unique1", "unique2"}
    # The raw inputs are exact linear maps of all the latents; from the tiny task's 320 training rows the
    # classifier cannot show how much, but every estimate must be clearly above zero.
    assert min(bits.values()) > 0.2, bits
    table = (results / TABLE_FILE).read_text()
    assert "tiny-synthetic / Raw features" in table and "I(Z; ws)" in table and "paper I(Z; w1)" in table


def test_diagnose_retrains_an_older_record_with_defaults_for_hyperparameters_it_predates(tmp_path):
    from harness.api.catalog import METHODS, TASKS
    from harness.cli.commands import _scored_configuration
    from harness.results.records import Record, write_record
    from harness.running.pair import Pair
    from harness.running.runner import RunOptions

    pair = Pair(TASKS.get("tiny-synthetic")(), METHODS.get("factorcl-sup"))
    old_hparams = {"lr": 0.01, "batch_size": 64, "embed_dim": 16}  # recorded before club_lr_scale existed
    write_record(tmp_path, Record(task={"name": "tiny-synthetic"}, seed=0, status="ok", hparams=old_hparams,
                                  method={"name": "factorcl-sup", "display_name": "FactorCL-SUP"},
                                  protocol={"epochs": 3}))
    options = RunOptions(results=tmp_path, overrides={"factor_dim": "8"})
    hparams, epochs, source = _scored_configuration(options, pair, 0)
    assert epochs == 3 and source == "records/tiny-synthetic/factorcl-sup/seed0.json"  # no machine paths
    assert hparams["club_lr_scale"] == 1.0 and hparams["factor_dim"] == 8
    assert {k: hparams[k] for k in old_hparams} == old_hparams  # recorded values win over defaults
