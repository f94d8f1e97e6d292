"""Every registered method that applies, one tiny `harness run` on each FactorCL benchmark's fixture files."""

import shutil
from pathlib import Path

import pytest

from harness.api.catalog import METHODS, TASKS
from harness.results.leaderboard import render
from harness.results.records import read_records
from tests.fixtures import TEST_METHODS
from tests.test_multibench import BENCHMARKS, write

TEST_ONLY = set(TEST_METHODS)  # the deliberately misbehaving methods registered for the tests
REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference"


def applicable(task_name: str) -> list[str]:
    task = TASKS.get(task_name)()
    return [m for m in METHODS.names() if m not in TEST_ONLY and METHODS.get(m).requirements.unmet(task) is None]


# IRFL's row trains every applicable method on images and captions (about 35 s on 2 cores, a ninth of the
# suite): a `system` test, which .ci/run runs after the default suite.
@pytest.mark.parametrize("task_name", [pytest.param(t, marks=pytest.mark.system) if t == "irfl" else t
                                       for t in BENCHMARKS])
def test_every_applicable_method_runs_on_the_fixture(task_name, harness_run, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write(task_name, data_dir)
    methods = applicable(task_name)
    assert {"raw-features", "untrained", "clip", "simclr"} <= set(methods)
    assert harness_run("--method", ",".join(methods), "--task", task_name, "--data-dir", str(data_dir),
                       "--trials", "1", "--epochs", "1", "--seeds", "1") == 0
    records = {r.method["name"]: r for r in read_records(harness_run.results)}
    assert set(records) == set(methods)
    for record in records.values():
        assert record.status == "ok" and 0.0 <= record.metrics["test_acc"] <= 1.0
        assert record.task["suite"] == "multibench" and record.task["params"]["encoders"]
    shutil.copytree(REFERENCE, harness_run.results / "reference")  # the papers' numbers, as published
    board = render(harness_run.results)
    multibench = board.split("## multibench")[1].split("\n## ")[0]
    ours = next(ln for ln in multibench.splitlines() if ln.startswith("| SimCLR "))
    assert f"{task_name} (paper)" in board and "(1)" in ours  # our one-seed cell beside the paper's number


def test_without_runs_the_multibench_papers_numbers_stand_in_a_table_of_their_own(tmp_path):
    from harness.results.records import write_record
    from tests.test_leaderboard import record, row

    write_record(tmp_path, record("synthetic", "clip", 0, 0.9, display="CLIP"))
    shutil.copytree(REFERENCE, tmp_path / "reference")
    board = render(tmp_path)
    assert "\n## multibench\n" not in board  # no run of ours on these tasks: no table of ours for them
    multibench = board.split("## multibench: reported by the papers, not run here\n")[1].split("\n## ")[0]
    headers = [c.strip() for c in multibench.strip().splitlines()[0].strip("|").split("|")]
    assert headers == ["method", *(f"{task} (paper)" for task in sorted(BENCHMARKS))]
    cells = dict(zip(headers, row(multibench, "FactorCL-SUP")))
    assert cells["mosi (paper)"] == "70.69" and cells["irfl (paper)"] == "98.80" and cells["mimic (paper)"] == "76.79"
    # FactorCL's MIMIC notebook probes its training loader: the legend says so beside the reported column.
    assert "Note: the mimic (paper) column is training accuracy, not test" in multibench
