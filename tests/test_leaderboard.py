import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.leaderboard import render
from harness.identity import run_identity
from harness.records import record_path, write_record
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


def test_cells_show_mean_std_and_count_with_the_best_bold(results):
    text = render(results)
    assert row(text, "GOOD")[1] == "91.00 ± 1.41 (2)"
    assert row(text, "PARTIAL")[1] == "**99.00 ± 0.00 (1)**"
    assert row(text, "FAIR")[2] == "**75.00 ± 0.00 (1)**"


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
    code = "import sys, harness.leaderboard, harness.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_the_committed_leaderboard_is_what_the_committed_records_regenerate():
    committed = ROOT / "results" / "LEADERBOARD.md"
    assert committed.exists(), "results/LEADERBOARD.md is missing; run `harness leaderboard`"
    assert committed.read_text() == render(ROOT / "results"), "run `harness leaderboard` and commit the result"


def test_a_cell_whose_seed_failed_an_assumption_check_is_marked(tmp_path):
    from harness.leaderboard import CHECK_FAILED, render
    from harness.records import Record, write_record

    for seed, held in ((0, True), (1, False)):
        write_record(tmp_path, Record(
            task={"name": "t", "version": "1", "suite": "s"}, method={"name": "m", "display_name": "M", "version": "1"},
            seed=seed, status="ok", metrics={"test_acc": 0.5}, checks={"bound": {"held": held, "detail": "x"}}))
    row = next(line for line in render(tmp_path).splitlines() if line.startswith("| M "))
    assert CHECK_FAILED in row


def test_a_record_of_the_previous_schema_is_read_and_shown(results):
    schema_1_record(record_path(results, "t2", "partial", 0), seed=0, metrics={"test_acc": 0.6},
                    task={"name": "t2", "version": "1", "suite": "s", "fingerprint": "f", "params": {}},
                    method={"name": "partial", "display_name": "PARTIAL", "version": "1"})
    assert row(render(results), "PARTIAL")[2] == "60.00 ± 0.00 (1)"


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
    assert row(render(tmp_path), "M")[1] == "**60.00 ± 14.14 (2)**"
