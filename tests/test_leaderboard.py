import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.results.identity import run_identity
from harness.results.leaderboard import render
from harness.results.records import record_path, write_record
from tests.test_records import make_record, schema_1_record

ROOT = Path(__file__).resolve().parent.parent


def record(task, method, seed, acc, display=None, **extra):
    return make_record(seed=seed, task={"name": task, "version": "1", "suite": "s", "fingerprint": "f", "params": {}},
                       method={"name": method, "display_name": display or method.upper(), "version": "1"},
                       metrics={"test_acc": acc, "test_f1": acc}, finished_at="2026-11-23T01:00:00+00:00", **extra)


@pytest.fixture
def results(tmp_path):
    for seed, (a, b) in enumerate([(0.90, 0.80), (0.92, 0.82)]):
        write_record(tmp_path, record("t1", "good", seed, a))
        write_record(tmp_path, record("t1", "fair", seed, b))
    write_record(tmp_path, record("t2", "good", 0, 0.70))
    write_record(tmp_path, record("t2", "fair", 0, 0.75))
    write_record(tmp_path, record("t1", "partial", 0, 0.99))
    write_record(tmp_path, make_record(seed=None, status="n/a", reason="needs 2 modalities", metrics={},
                                       task={"name": "t2", "version": "1", "suite": "s", "params": {}},
                                       method={"name": "partial", "display_name": "PARTIAL", "version": "1"}))
    return tmp_path


def row(text: str, method: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {method} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_cells_show_mean_and_t_interval_and_count_with_the_best_bold(results):
    text = render(results)
    assert row(text, "GOOD")[1] == "91.00 ± 12.71 (2)"  # t(0.975, 1 df) = 12.706 times std 1.414 / sqrt 2
    assert row(text, "PARTIAL")[1] == "**99.00 (1)**"  # one seed: no interval to give
    assert row(text, "FAIR")[2] == "**75.00 (1)**"


def test_average_rank_only_for_methods_with_every_task(results):
    text = render(results)
    assert row(text, "GOOD")[-1] == "1.50" and row(text, "FAIR")[-1] == "1.50"
    assert row(text, "PARTIAL")[-1] == ""
    assert row(text, "PARTIAL")[2] == "n/a: needs 2 modalities"


def test_reported_numbers_stand_beside_ours(results):
    reference = results / "reference"
    reference.mkdir()
    (reference / "paper.csv").write_text("# a paper, as reported\nmethod,T1\nGOOD,88.5\nOTHER,70\n")
    (reference / "sources.toml").write_text(
        '[[source]]\nfile = "paper.csv"\nlabel = "Paper"\nscale = 0.01\n'
        '[source.tasks]\nt1 = { column = "T1", suite = "s" }\n')
    text = render(results)
    assert "t1 (paper)" in text
    assert row(text, "GOOD")[2] == "88.50"
    assert row(text, "OTHER")[1] == "—" and row(text, "OTHER")[2] == "70.00"


def test_a_papers_number_on_a_task_not_run_here_sits_in_a_table_apart(results):
    """No row that reads as this harness's results holds a paper's number from a task it never ran (t9):
    that number gets a table of its own; the number on t1, which both ran, stays beside ours."""
    reference = results / "reference"
    reference.mkdir()
    (reference / "paper.csv").write_text("# a paper, as reported\nmethod,T1,T9\nGOOD,88.5,61.2\nOTHER,70,55\n")
    (reference / "sources.toml").write_text(
        '[[source]]\nfile = "paper.csv"\nlabel = "Paper"\nscale = 0.01\n'
        '[source.tasks]\nt1 = { column = "T1", suite = "s" }\nt9 = { column = "T9", suite = "s" }\n')
    text = render(results)
    ours, apart = text.split("## s\n")[1].split("## s: reported by the papers, not run here\n")
    assert "t1 (paper)" in ours and "t9" not in ours
    assert row(ours, "GOOD")[2] == "88.50"
    assert "t1" not in apart.split("## ")[0] and row(apart, "GOOD") == ["GOOD", "61.20"]
    assert row(apart, "OTHER") == ["OTHER", "55.00"]


def test_footer_names_hardware_versions_date_and_budget(results):
    text = render(results)
    assert "Hardware: cpu" in text and "Runs finished 2026-11-23 to 2026-11-23" in text
    assert "| t1     | GOOD     | 2        | 3        | 2" in text  # epochs, trials, seeds


def test_check_fails_when_the_file_is_stale(results, capsys):
    assert main(["leaderboard", "--results", str(results)]) == 0
    assert main(["leaderboard", "--results", str(results), "--check"]) == 0
    write_record(results, record("t2", "good", 1, 0.1))
    assert main(["leaderboard", "--results", str(results), "--check"]) == 2
    assert "out of date" in capsys.readouterr().err


def test_no_records_is_a_clear_error(tmp_path, capsys):
    assert main(["leaderboard", "--results", str(tmp_path)]) == 2
    assert "no result records" in capsys.readouterr().err


def test_the_leaderboard_imports_no_torch():
    code = "import sys, harness.results.leaderboard, harness.results.publishing.site, harness.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_committed_leaderboard_figures_and_page_are_what_the_committed_records_regenerate():
    from harness.cli.encoder_facts import encoder_facts
    from harness.results.publishing.site import publish

    committed = ROOT / "results" / "LEADERBOARD.md"
    assert committed.exists(), "results/LEADERBOARD.md is missing; run `harness leaderboard`"
    assert publish(ROOT / "results", check=True, facts=encoder_facts) == [], \
        "run `harness leaderboard` and commit the results"  # with the command's facts: the claims count encoders


def test_a_row_the_paired_test_cannot_tell_from_the_best_is_marked_and_a_clear_loser_is_not(tmp_path):
    from harness.results.leaderboard import TIED

    for seed, (best, close, far) in enumerate([(0.90, 0.895, 0.60), (0.92, 0.905, 0.62), (0.91, 0.912, 0.61)]):
        write_record(tmp_path, record("t", "best", seed, best))
        write_record(tmp_path, record("t", "close", seed, close))
        write_record(tmp_path, record("t", "far", seed, far))
    text = render(tmp_path)
    assert row(text, "BEST")[1].startswith("**91.00") and TIED not in row(text, "BEST")[1]
    assert row(text, "CLOSE")[1].endswith(TIED)
    assert TIED not in row(text, "FAR")[1]


def test_a_record_from_a_dirty_tree_is_marked(tmp_path):
    from harness.results.leaderboard import DIRTY

    write_record(tmp_path, record("t", "clean", 0, 0.5, environment={"git_commit": "abc"}))
    write_record(tmp_path, record("t", "dirty", 0, 0.4, environment={"git_commit": "abc-dirty"}))
    text = render(tmp_path)
    assert row(text, "DIRTY")[1].endswith(DIRTY) and DIRTY not in row(text, "CLEAN")[1]


def test_a_table_with_three_tasks_gets_its_critical_difference(tmp_path):
    for task in ("t1", "t2", "t3"):
        for method, acc in (("a", 0.9), ("b", 0.8), ("c", 0.7)):
            write_record(tmp_path, record(task, method, 0, acc))
    text = render(tmp_path)
    assert "Nemenyi critical difference 1.91" in text  # 2.343 * sqrt(3 * 4 / (6 * 3)), Demšar's q for k = 3


def test_a_cell_whose_seed_failed_an_assumption_check_is_marked(tmp_path):
    from harness.results.leaderboard import CHECK_FAILED, render
    from harness.results.records import Record, write_record

    for seed, held in ((0, True), (1, False)):
        write_record(tmp_path, Record(
            task={"name": "t", "version": "1", "suite": "s"}, method={"name": "m", "display_name": "M", "version": "1"},
            seed=seed, status="ok", metrics={"test_acc": 0.5}, checks={"bound": {"held": held, "detail": "x"}}))
    row = next(line for line in render(tmp_path).splitlines() if line.startswith("| M "))
    assert CHECK_FAILED in row


def test_committed_records_of_methods_that_do_not_train_say_they_trained_zero_epochs():
    from harness.api.catalog import METHODS
    from harness.results.records import read_records

    stale = [f"{r.task['name']}/{r.method['name']} seed {r.seed}" for r in read_records(ROOT / "results")
             if r.status == "ok" and not METHODS.get(r.method["name"]).trains and r.protocol.get("epochs") != 0]
    assert stale == [], "the protocol table would claim epochs these reference rows never ran"


def test_a_figure_is_stale_when_its_data_changed_and_redrawn_by_the_command(results):
    from harness.results.publishing.site import publish

    assert publish(results) == [] and publish(results, check=True) == []
    figure = results / "figures" / "scores-s.svg"
    drawn = figure.read_text()
    write_record(results, record("t1", "fair", 2, 0.5))
    stale = publish(results, check=True)
    assert str(figure) in stale and str(results / "index.html") in stale and str(results / "LEADERBOARD.md") in stale
    assert figure.read_text() == drawn  # a check writes nothing
    (results / "figures" / "leftover.svg").write_text("<svg/>")
    assert any("leftover.svg (no longer drawn)" in s for s in publish(results, check=True))
    assert publish(results) == [] and publish(results, check=True) == [] and figure.read_text() != drawn
    assert not (results / "figures" / "leftover.svg").exists()


def test_a_record_of_the_previous_schema_is_read_and_shown(results):
    schema_1_record(record_path(results, "t2", "partial", 0), seed=0, metrics={"test_acc": 0.6},
                    task={"name": "t2", "version": "1", "suite": "s", "fingerprint": "f", "params": {}},
                    method={"name": "partial", "display_name": "PARTIAL", "version": "1"})
    assert row(render(results), "PARTIAL")[2] == "60.00 (1)"


def identified(task, method, seed, acc, epochs, fixed):
    r = record(task, method, seed, acc, hparams={"lr": 0.001}, protocol={"epochs": epochs, "trials": 3, "seeds": 2})
    r.identity = run_identity(r.task, r.method, r.protocol, fixed)
    return r


def test_a_cell_that_mixes_run_identities_is_refused_naming_both_files(tmp_path, capsys):
    write_record(tmp_path, identified("t", "m", 0, 0.5, 6, {"lr": 0.001}))
    write_record(tmp_path, identified("t", "m", 1, 0.6, 1, {"lr": 0.001}))
    assert main(["leaderboard", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "t/m/seed1.json and " in err and "t/m/seed0.json were made under different run identities" in err
    assert "(seed1.json has 1 epochs, seed0.json 6 epochs)" in err and not (tmp_path / "LEADERBOARD.md").exists()


def test_a_migrated_record_shares_a_cell_with_a_new_one_whose_fixed_values_it_holds(tmp_path):
    schema_1_record(record_path(tmp_path, "t", "m", 0), **vars(identified("t", "m", 0, 0.5, 6, None)) | {
        "identity": {}})
    write_record(tmp_path, identified("t", "m", 1, 0.7, 6, {"lr": 0.001}))
    assert row(render(tmp_path), "M")[1] == "**60.00 ± 127.06 (2)**"  # t(0.975, 1) * 14.14 / sqrt 2


def test_a_check_that_could_not_fail_is_marked_not_measurable_never_held(tmp_path):
    from harness.api.checks import AssumptionCheck, check_state
    from harness.results.leaderboard import CHECK_FAILED, NOT_MEASURABLE
    from harness.results.records import Record

    pinned = AssumptionCheck("bound", held=False, detail="pinned at 0", measurable=False)
    assert pinned.state == "not measurable" and not pinned.failed
    with pytest.raises(ValueError):
        AssumptionCheck("bound", held=True, detail="x", measurable=False)
    assert check_state({"held": False}) == "violated"  # records before the third state
    for seed in range(2):
        write_record(tmp_path, Record(
            task={"name": "t", "version": "1", "suite": "s"}, method={"name": "m", "display_name": "M", "version": "1"},
            seed=seed, status="ok", metrics={"test_acc": 0.5}, checks={"bound": pinned.as_record()}))
    row = next(line for line in render(tmp_path).splitlines() if line.startswith("| M "))
    assert NOT_MEASURABLE in row and CHECK_FAILED not in row


def grouped_record(method, seed, heldout, test_acc, display):
    """A record of a task ranked by another score than test accuracy (Task.main_score, carried in the record)."""
    return make_record(seed=seed, task={"name": "grouped", "version": "2", "suite": "s", "fingerprint": "f",
                                        "params": {}, "main_score": "heldout_group_acc",
                                        "side_scores": ["heldout_group_knn", "test_acc"]},
                       method={"name": method, "display_name": display, "version": "1"},
                       metrics={"test_acc": test_acc, "test_f1": test_acc, "heldout_group_acc": heldout,
                                "heldout_group_knn": heldout - 0.01},
                       finished_at="2026-11-23T01:00:00+00:00")


@pytest.fixture
def grouped_results(tmp_path):
    # SEPARATES wins the superclass probe, LINKS the held-out members: the main score must decide.
    scores = {"separates": ([0.30, 0.32, 0.31], [0.95, 0.96, 0.97]), "links": ([0.70, 0.72, 0.71], [0.80, 0.81, 0.82]),
              "oracle": ([0.60, 0.62, 0.61], [0.90, 0.91, 0.92])}
    for method, (heldout, test_acc) in scores.items():
        for seed in range(3):
            write_record(tmp_path, grouped_record(method, seed, heldout[seed], test_acc[seed], method.upper()))
    return tmp_path


def test_a_task_is_ranked_by_its_declared_main_score_with_the_others_beside_it(grouped_results):
    text = render(grouped_results)
    header = next(ln for ln in text.splitlines() if ln.startswith("| method"))
    assert [c.strip() for c in header.strip("|").split("|")][1:4] == [
        "grouped: heldout_group_acc", "grouped: heldout_group_knn", "grouped: test_acc"]
    assert row(text, "LINKS")[1].startswith("**71.00") and not row(text, "SEPARATES")[1].startswith("**")
    assert row(text, "SEPARATES")[3].startswith("96.00") and "**" not in row(text, "SEPARATES")[3]  # unranked
    assert row(text, "LINKS")[2].startswith("70.00")


def test_a_row_above_the_reference_is_flagged_not_hidden(grouped_results):
    reference = grouped_results / "reference"
    reference.mkdir()
    (reference / "sources.toml").write_text('[reference]\ns = "ORACLE"\n\n[paired]\ns = "SEPARATES"\n\n'
                                            '[controls]\ns = ["ORACLE"]\n')
    text = render(grouped_results)
    assert row(text, "LINKS")[1] == "**71.00 ± 2.48 (3) ▲**"  # above the reference on the main score
    assert "▲" not in row(text, "SEPARATES")[1] and "▲" not in row(text, "ORACLE")[1]
    assert "▲" not in row(text, "SEPARATES")[3]  # its test_acc is above the oracle's, but that is not the main score
    # Paired with the baseline and with each control, on the main score, named in the section's words.
    assert "### Paired differences from SEPARATES" in text and "### Paired differences from ORACLE" in text
    assert "Each task's main score (grouped: `heldout_group_acc`" in text
    paired_from_oracle = text.split("### Paired differences from ORACLE")[1]
    assert "| LINKS " in paired_from_oracle and "+10.00 [" in paired_from_oracle


def test_the_run_end_table_names_the_main_score_it_shows(grouped_results, tmp_path):
    from harness.results.publishing.run_report import PairOutcome, summary_table

    text = summary_table([PairOutcome("grouped", "links", "ok")], grouped_results, "sqlite:///x.db")
    header, _, line = text.splitlines()[:3]
    assert "score" in header and "test acc" not in header
    assert "heldout_group_acc" in line and "71.00 ± 2.48 (3)" in line
    write_record(tmp_path / "plain", record("t1", "good", 0, 0.9))
    assert "test acc %" in summary_table([PairOutcome("t1", "good", "ok")], tmp_path / "plain", "sqlite:///x.db")
