"""Per-seed paired differences from a baseline, and the leaderboard section that shows them."""

import math
import re
import numbers
from dataclasses import replace

import numpy as np
from scipy import stats

from harness.results.leaderboard import render
from harness.results.loading import load_folders, load_results
from harness.results.overlay import folders
from harness.results.paired import paired_differences, paired_section, paired_table
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


def test_seeds_made_on_another_version_or_setting_of_the_task_do_not_pair(tmp_path):
    """A row rerun on a new version of its task (other data) is no paired replicate of the baseline's seeds."""
    write_runs(tmp_path)
    newer = record("t1", "newer", 0, 0.9, display="Newer", protocol={"epochs": 2})
    write_record(tmp_path, replace(newer, task=newer.task | {"version": "2"}))
    other = record("t1", "other", 0, 0.9, display="Other", protocol={"epochs": 2})
    write_record(tmp_path, replace(other, task=other.task | {"params": {"rate": 0.5}}))
    table = paired_differences(load_results(tmp_path), "SimCLR").set_index("method")
    assert "Newer" not in table.index and "Other" not in table.index
    assert table.loc["Guided"].n == 5  # the same version and setting still pair


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


COLUMNS = ["task", "method", "n", "mean", "low", "high", "p", "holm_p", "check_failed", "per_seed"]


def test_each_row_holds_its_seeds_differences_and_whether_a_seed_failed_its_check(tmp_path):
    write_runs(tmp_path)
    for seed, base in enumerate(BASE):  # "Verified" is 2 points up, and its seed 3 violated its assumption check
        write_record(tmp_path, record("t1", "checked", seed, base + 0.02, display="Verified",
                                      protocol={"epochs": 2}, checks={"bound": {"held": seed != 3, "detail": "x"}}))
    table = paired_differences(load_results(tmp_path), "SimCLR")
    assert list(table.columns) == COLUMNS
    assert list(table.method) == ["Guided", "Noise", "Verified"]  # by task, then shown name, not file name
    guided, checked = table.set_index("method").loc["Guided"], table.set_index("method").loc["Verified"]
    assert list(guided.per_seed) == [0, 1, 2, 3, 4] and all(isinstance(s, numbers.Integral) for s in guided.per_seed)
    # Float64 differences of O(1) scores: ~1e-16, far inside isclose's rel 1e-9.
    assert all(math.isclose(guided.per_seed[s], gain) for s, gain in enumerate(GAIN))
    assert not guided.check_failed and checked.check_failed
    lines = paired_table(load_results(tmp_path), "SimCLR", ["t1"]).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["Guided", "Noise", "Verified"]
    assert re.search(r"\(5\) p = [0-9.e-]+$", lines[2].split("|")[2].strip())
    assert re.search(r"\(5\) p = [0-9.e-]+ ⚠$", lines[4].split("|")[2].strip())


def test_two_seeds_give_an_interval_one_seed_a_bare_mean_and_a_seed_without_a_score_none(tmp_path):
    for seed, (base, gain) in enumerate([(0.60, 0.03), (0.62, 0.05)]):
        write_record(tmp_path, record("t1", "simclr", seed, base, display="SimCLR"))
        write_record(tmp_path, record("t1", "two", seed, base + gain, display="Two"))
    write_record(tmp_path, record("t1", "one", 0, 0.65, display="One"))
    no_score = record("t1", "one", 1, 0.7, display="One")  # finished, but without the task's main score
    write_record(tmp_path, replace(no_score, metrics={"test_f1": 0.7}))
    table = paired_differences(load_results(tmp_path), "SimCLR").set_index("method")
    half = stats.t.ppf(0.975, 1) * np.std([0.03, 0.05], ddof=1) / math.sqrt(2)
    # As above: float64 arithmetic on O(1) scores, far inside isclose's rel 1e-9.
    assert math.isclose(table.loc["Two"].low, 0.04 - half) and math.isclose(table.loc["Two"].high, 0.04 + half)
    assert table.loc["One"].n == 1 and math.isclose(table.loc["One"]["mean"], 0.05)
    cell = paired_table(load_results(tmp_path), "SimCLR", ["t1"]).splitlines()[2].split("|")[2].strip()
    assert cell == "+5.00 (1)"  # no bounds, no mark


def test_methods_are_rows_by_name_with_an_empty_cell_where_unpaired_and_names_shown_as_written(tmp_path):
    for seed, base in enumerate(BASE[:2]):  # names that read as numbers, which tabulate would reformat
        for task in ("t1", "t2"):
            write_record(tmp_path, record(task, "simclr", seed, base, display="SimCLR"))
            write_record(tmp_path, record(task, "numeric", seed, base, display="2.50"))
        write_record(tmp_path, record("t2", "other", seed, base, display="1.10"))  # first in name, not in task
    lines = paired_table(load_results(tmp_path), "SimCLR", ["t1", "t2"]).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["method", "t1", "t2"]
    assert [cell.strip() for cell in lines[2].strip("|").split("|")] == ["1.10", "", "+0.00 [+0.00, +0.00] (2) p = 1"]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == ["2.50"] + ["+0.00 [+0.00, +0.00] (2) p = 1"] * 2


def test_nothing_to_pair_gives_an_empty_table_and_no_section(tmp_path):
    for seed, base in enumerate(BASE):
        write_record(tmp_path, record("t1", "simclr", seed, base, display="SimCLR"))
    results = load_results(tmp_path)
    table = paired_differences(results, "SimCLR")
    assert table.empty and list(table.columns) == COLUMNS
    assert paired_table(results, "SimCLR", ["t1"]) is None and paired_section(results, "SimCLR", ["t1"]) == []


def test_the_section_says_what_is_differenced_and_when_folders_are_overlaid_what_pairs_with_what(tmp_path):
    write_runs(tmp_path / "runs")
    write_runs(tmp_path / "results")
    section = paired_section(load_results(tmp_path / "runs"), "SimCLR", ["t1"])
    assert section[:2] == ["### Paired differences from SimCLR", ""] and section[3] == "" and section[-1] == ""
    assert section[2].startswith("Test accuracy minus SimCLR's on the same task and seed")
    assert section[2].endswith("in points: mean [95% t interval] (seeds paired) and p, the paired t-test's two-sided "
                               "p Holm-corrected over this table's 2 tested comparisons (one family). A corrected p "
                               "below 0.05 is a difference the seeds cannot explain, every comparison of the table "
                               "counted; the interval is for its comparison alone.")
    assert section[4] == paired_table(load_results(tmp_path / "runs"), "SimCLR", ["t1"])
    overlaid = paired_section(load_folders(folders(tmp_path / "runs", [tmp_path / "results"])), "SimCLR", ["t1"],
                              score="Held-out accuracy")
    assert overlaid[2].startswith("Held-out accuracy minus SimCLR's")
    assert overlaid[2].endswith("comparison alone. Each row is paired with the SimCLR row of its own folder where that "
                                "folder has the task, else with the overlaid folder's, and only on seeds of the "
                                "same epochs, batch size and task version.")
