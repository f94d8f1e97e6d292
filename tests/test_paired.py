"""Per-seed paired differences from a baseline, and the leaderboard section that shows them."""

import math

import numpy as np
from scipy import stats

from harness.results.leaderboard import load_results, render
from harness.results.paired import paired_differences
from harness.results.records import write_record
from tests.test_leaderboard import record

BASE = [0.60, 0.62, 0.58, 0.61, 0.59]
GAIN = [0.03, 0.05, 0.04, 0.02, 0.06]  # per seed: a steady gain smaller than the spread between seeds


def write_runs(root, epochs=2):
    for seed, (base, gain) in enumerate(zip(BASE, GAIN)):
        write_record(root, record("t1", "simclr", seed, base, display="SimCLR", protocol={"epochs": epochs}))
        write_record(root, record("t1", "guided", seed, base + gain, display="Guided", protocol={"epochs": epochs}))
        write_record(root, record("t1", "noise", seed, base + (0.01 if seed % 2 else -0.01), display="Noise",
                                  protocol={"epochs": epochs}))


def test_the_interval_is_the_t_interval_of_the_per_seed_differences(tmp_path):
    write_runs(tmp_path)
    table = paired_differences(load_results(tmp_path), "SimCLR").set_index("method")
    guided = table.loc["Guided"]
    half = stats.t.ppf(0.975, 4) * np.std(GAIN, ddof=1) / math.sqrt(5)
    # Float64 arithmetic on scores of O(1), in another order: ~1e-16 absolute, far inside isclose's rel 1e-9.
    assert guided.n == 5 and math.isclose(guided["mean"], np.mean(GAIN))
    assert math.isclose(guided.low, np.mean(GAIN) - half) and math.isclose(guided.high, np.mean(GAIN) + half)
    assert guided.low > 0  # pairing removes the seeds' shared spread: the steady gain shows
    assert table.loc["Noise"].low < 0 < table.loc["Noise"].high
    assert "SimCLR" not in table.index


def test_seeds_pair_only_with_the_same_budget_and_one_seed_gives_no_interval(tmp_path):
    write_runs(tmp_path)
    write_record(tmp_path, record("t1", "longer", 0, 0.9, display="Longer", protocol={"epochs": 9}))
    write_record(tmp_path, record("t1", "single", 0, 0.7, display="Single", protocol={"epochs": 2}))
    table = paired_differences(load_results(tmp_path), "SimCLR").set_index("method")
    assert "Longer" not in table.index
    assert table.loc["Single"].n == 1 and math.isnan(table.loc["Single"].low)


def test_leaderboard_prints_the_suites_notes_and_paired_table(tmp_path):
    write_runs(tmp_path)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "sources.toml").write_text('[notes]\ns = ["the public X is a no-op."]\n[paired]\ns = "SimCLR"\n')
    text = render(tmp_path)
    assert "Note: the public X is a no-op." in text
    assert "### Paired differences from SimCLR" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| Guided ") and "[" in ln)
    assert "+4.00 [+2.04, +5.96] (5)" in line
