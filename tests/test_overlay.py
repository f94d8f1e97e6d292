"""`harness leaderboard --results runs --with results`: a user's rows beside the published ones, read-only."""

import hashlib
import math
from pathlib import Path

import pytest

from harness.cli import main
from harness.results.loading import load_folders
from harness.results.overlay import folders
from harness.results.paired import paired_differences
from harness.results.protocol_marks import OFF_PROTOCOL
from harness.results.records import mlflow_server, run_page, write_record
from harness.results.publishing.site import publish
from tests.test_leaderboard import record, row

PUBLISHED = {"epochs": 6, "trials": 6, "seeds": 3, "batch_size": 256}
SHORT = {"epochs": 2, "trials": 2, "seeds": 2, "batch_size": 256}
UNTRAINED = {"epochs": 0, "trials": 0, "seeds": 3, "batch_size": 256}


def digest(folder: Path) -> str:
    """Every file under the folder, by relative path and content."""
    found = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        found.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return found.hexdigest()


@pytest.fixture
def folders_pair(tmp_path):
    """results/: SimCLR, CLIP and an untrained row at the published protocol. runs/: SimCLR run shorter, with
    the highest mean of the column, and CLIP at the published protocol."""
    published, runs = tmp_path / "results", tmp_path / "runs"
    for seed, (simclr, clip, raw) in enumerate([(0.80, 0.70, 0.50), (0.82, 0.72, 0.51), (0.81, 0.71, 0.52)]):
        write_record(published, record("t1", "simclr", seed, simclr, display="SimCLR", protocol=PUBLISHED))
        write_record(published, record("t1", "clip", seed, clip, display="CLIP", protocol=PUBLISHED))
        write_record(published, record("t1", "raw", seed, raw, display="Raw", protocol=UNTRAINED))
        write_record(runs, record("t1", "clip", seed, clip + 0.01, display="CLIP", protocol=PUBLISHED,
                                  mlflow_run_id=f"clip-run-{seed}"))
        write_record(runs, record("t1", "raw", seed, raw, display="Raw", protocol=UNTRAINED))
    for seed, acc in enumerate([0.95, 0.96]):
        write_record(runs, record("t1", "simclr", seed, acc, display="SimCLR", protocol=SHORT,
                                  hparams={"lr": 0.01 * (seed + 1)}, mlflow_run_id=f"simclr-run-{seed}",
                                  environment={"hardware": "cpu", "mlflow_server": "http://mlflow.example:5000"}))
    return runs, published


def test_an_overlay_names_each_rows_folder_marks_the_other_protocol_and_writes_nothing_there(folders_pair):
    runs, published = folders_pair
    before = digest(published)
    assert main(["leaderboard", "--results", str(runs), "--with", str(published)]) == 0
    assert digest(published) == before  # read only: not a file added or changed
    text = (runs / "LEADERBOARD.md").read_text()
    assert "from the records in `runs/records/` beside those in `results/records/`" in text
    short, kept = row(text, "SimCLR [runs]"), row(text, "SimCLR [results]")
    assert short[1] == f"95.50 ± 6.35 (2) {OFF_PROTOCOL}"  # t(0.975, 1) * 0.707 / sqrt 2; highest, yet not bold
    assert OFF_PROTOCOL not in kept[1] and OFF_PROTOCOL not in row(text, "CLIP [runs]")[1]
    assert OFF_PROTOCOL not in row(text, "Raw [runs]")[1]
    assert kept[1].startswith("**81.00") and short[-1] == ""  # the best and the ranks: the published protocol's
    assert row(text, "CLIP [runs]")[-1] == "2.00"  # same protocol: ranked with the published rows, below SimCLR
    assert (f"{OFF_PROTOCOL} SimCLR [runs] on t1: 2 epochs, 2 trials, 2 seeds; the column's published rows: "
            "6 epochs, 6 trials, 3 seeds; not ranked.") in text


def test_a_marked_cell_takes_no_rank_but_rows_at_the_columns_protocol_do(folders_pair):
    runs, published = folders_pair
    write_record(runs, record("t2", "simclr", 0, 0.5, display="SimCLR", protocol=SHORT))
    write_record(runs, record("t2", "clip", 0, 0.6, display="CLIP", protocol=PUBLISHED))
    write_record(published, record("t2", "clip", 0, 0.4, display="CLIP", protocol=PUBLISHED))
    assert publish(runs, overlays=[published]) == []
    text = (runs / "LEADERBOARD.md").read_text()
    assert row(text, "CLIP [runs]")[-1] == "1.00"  # first on both tasks
    assert row(text, "SimCLR [runs]")[-1] == ""  # both its cells are off the protocol
    assert row(text, "SimCLR [results]")[-1] == ""  # it has no t2


def test_with_no_overlay_the_columns_majority_protocol_decides(tmp_path):
    for seed in range(3):
        for method in ("a", "b"):
            write_record(tmp_path, record("t", method, seed, 0.6 + 0.01 * seed, protocol=PUBLISHED))
        write_record(tmp_path, record("t", "raw", seed, 0.5, protocol=UNTRAINED))
    write_record(tmp_path, record("t", "odd", 0, 0.9, protocol=SHORT))
    assert main(["leaderboard", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "LEADERBOARD.md").read_text()
    assert row(text, "ODD")[1] == f"90.00 (1) {OFF_PROTOCOL}" and "majority: 6 epochs, 6 trials, 3 seeds" in text
    assert all(OFF_PROTOCOL not in row(text, m)[1] for m in ("A", "B", "RAW"))
    assert row(text, "A")[1].startswith("**")  # the best at the column's protocol, though ODD's mean is higher


def test_check_takes_no_overlay_and_a_missing_folder_is_one_line(folders_pair, capsys):
    runs, published = folders_pair
    before = digest(runs)
    assert main(["leaderboard", "--results", str(runs), "--with", str(published), "--check"]) == 2
    assert main(["leaderboard", "--results", str(runs), "--with", str(runs.parent / "nowhere")]) == 2
    assert main(["leaderboard", "--results", str(runs), "--with", str(runs)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and "takes no --with" in lines[0] and "nowhere: no such folder" in lines[1]
    assert "the same folder" in lines[2]
    assert digest(runs) == before


def test_rows_pair_with_their_own_folders_baseline_else_the_published_one(folders_pair):
    runs, published = folders_pair
    for seed, acc in enumerate([0.75, 0.77, 0.76]):
        write_record(runs, record("t2", "clip", seed, acc, display="CLIP", protocol=PUBLISHED))
        write_record(published, record("t2", "simclr", seed, 0.70, display="SimCLR", protocol=PUBLISHED))
    results = load_folders(folders(runs, [published]))
    table = paired_differences(results, "SimCLR").set_index(["task", "method"])
    # runs/ has SimCLR on t1 (another budget: no seed pairs) but not on t2: there CLIP pairs with the published.
    assert ("t1", "CLIP [runs]") not in table.index
    assert math.isclose(table.loc[("t2", "CLIP [runs]"), "mean"], 0.06)
    assert math.isclose(table.loc[("t1", "CLIP [results]"), "mean"], -0.10)


def test_the_page_shows_a_rows_hyperparameters_per_seed_scores_and_runs_and_names_its_folders(folders_pair):
    runs, published = folders_pair
    assert publish(runs, overlays=[published]) == []
    page = (runs / "index.html").read_text()
    assert ("from the records in <code>runs/records/</code> beside those in <code>results/records/</code>"
            in page)
    block = page.split('<details id="row-s--SimCLR-runs">')[1].split("</details>")[0]
    assert "Hyperparameters differ between seeds" in block
    assert "<code>lr=0.01</code>" in block and "<code>lr=0.02</code>" in block
    assert "<td>0</td><td>95.00</td>" in block and "<td>1</td><td>96.00</td>" in block
    assert '<a href="http://mlflow.example:5000/#/runs/simclr-run-1">' in block
    assert f"{OFF_PROTOCOL} Off the column's protocol" in block
    clip = page.split('<details id="row-s--CLIP-runs">')[1].split("</details>")[0]
    assert "Hyperparameters (every seed): <code>lr=0.001</code>" in clip
    assert "<td><code>clip-run-2</code></td>" in clip  # no server recorded: the id as text, never a made-up link
    assert "mlflow ui --backend-store-uri" in page
    assert '<a href="#row-s--SimCLR-runs">SimCLR [runs]</a>' in page  # the row's name opens its details


def test_a_published_page_names_its_own_folder(tmp_path):
    write_record(tmp_path / "mine", record("t", "m", 0, 0.5))
    assert publish(tmp_path / "mine") == []
    assert "from the records in <code>mine/records/</code>;" in (tmp_path / "mine" / "index.html").read_text()
    assert "from the records in `mine/records/`;" in (tmp_path / "mine" / "LEADERBOARD.md").read_text()


def test_a_record_keeps_only_an_http_servers_address_without_credentials():
    assert mlflow_server("https://me:secret@mlflow.example:8443/base/?x=1") == {
        "mlflow_server": "https://mlflow.example:8443/base"}
    assert mlflow_server("sqlite:////home/me/.harness/mlflow.db") == {}
    assert run_page("https://mlflow.example:8443/base", "abc") == "https://mlflow.example:8443/base/#/runs/abc"
    assert run_page(None, "abc") is None and run_page(math.nan, "abc") is None
