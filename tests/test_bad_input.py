"""The bad inputs a new user met, one by one: each is one line, exit code 2 and nothing written;
and a run that fails after it started fails alone, in one line, keeping what the other pairs produced."""

import json
import logging
import shutil
import socket
from pathlib import Path

import pytest
import torch

from harness.api.errors import HarnessError
from harness.cli import main
from harness.results.records import Record, read_records, record_path, write_record
from harness.running.failures import out_of_memory


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    return err[0]


def written(*roots) -> list[str]:
    return [str(p) for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


class Stores(list):
    roots: tuple


@pytest.fixture
def stores(tmp_path) -> Stores:
    """--results and --workdir in folders that do not exist yet, so anything written shows."""
    results, work = tmp_path / "results", tmp_path / "work"
    flags = Stores(["--results", str(results), "--workdir", str(work)])
    flags.roots = (results, work)
    return flags


@pytest.mark.parametrize("pair, expected", [
    ("lr=-1", "--set lr=-1.0: lr must be a number > 0; pass one, for example --set lr=0.001"),
    ("embed_dim=0", "--set embed_dim=0: embed_dim must be a whole number >= 1"),
    ("batch_size=0", "--set batch_size=0: batch_size must be a whole number >= 2"),
    ("weight_decay=-1e-3", "weight_decay must be a number >= 0"),
])
def test_a_hyperparameter_outside_its_domain_stops_before_any_work(pair, expected, stores, capsys):
    assert main(["run", "--method", "clip", "--task", "tiny-synthetic", "--set", pair, *stores]) == 2
    assert expected in one_error_line(capsys)
    assert written(*stores.roots) == []


def test_diagnose_on_a_task_without_side_variables_names_the_tasks_that_have_them(stores, capsys):
    assert main(["diagnose", "--method", "clip", "--task", "shapes-captions", *stores]) == 2
    line = one_error_line(capsys)
    assert "task shapes-captions carries no per-row side variables" in line and "synthetic" in line
    assert written(*stores.roots) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_postgresql_storage_whose_server_is_down_is_one_line_and_hides_the_password(stores, capsys):
    url = f"postgresql://harness:secret@127.0.0.1:{_closed_port()}/studies"
    assert main(["run", "--method", "clip", "--task", "tiny-synthetic", "--storage", url, *stores]) == 2
    line = one_error_line(capsys)
    assert "cannot open the database" in line and "start its server" in line and "secret" not in line
    assert written(*stores.roots) == []


def _record(seed: int = 0) -> Record:
    return Record(task={"name": "tiny-synthetic", "version": "1", "suite": "tests"},
                  method={"name": "clip", "display_name": "CLIP", "version": "1"}, seed=seed, status="ok",
                  metrics={"test_acc": 0.9, "test_f1": 0.9}, protocol={"epochs": 1, "trials": 1, "seeds": 1})


DAMAGES = {
    "invalid JSON": (lambda text: text[: len(text) // 2], "not valid JSON at line"),
    "not UTF-8": (lambda text: "\udcff", "not valid JSON"),
    "not an object": (lambda text: "[1, 2]", "a record is a JSON object, not a list"),
    "missing field": (lambda text: _edit(text, lambda d: d.pop("status")), "the record lacks field(s) status"),
    "unknown field": (lambda text: _edit(text, lambda d: d.update(colour="red")), "unknown field(s) colour"),
    "wrong type": (lambda text: _edit(text, lambda d: d.update(metrics=[0.9])), "field 'metrics' holds a list"),
    "wrong nested type": (lambda text: _edit(text, lambda d: d["metrics"].update(test_acc="high")),
                          "field 'metrics.test_acc' holds a str"),
    "no method name": (lambda text: _edit(text, lambda d: d["method"].pop("display_name")),
                       "field 'method.display_name' holds nothing"),
    "unknown schema": (lambda text: _edit(text, lambda d: d.update(schema=99)), "record schema 99 is not"),
}


def _edit(text: str, change) -> str:
    data = json.loads(text)
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_record_is_named_with_what_is_wrong_and_the_fix(damage, tmp_path, capsys):
    write_record(tmp_path, _record(0))
    path = write_record(tmp_path, _record(1))
    breaker, expected = DAMAGES[damage]
    path.write_bytes(breaker(path.read_text()).encode("utf-8", "surrogateescape"))
    assert main(["leaderboard", "--results", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and expected in line and "regenerate" in line
    assert not (tmp_path / "LEADERBOARD.md").exists()
    with pytest.raises(HarnessError, match="seed1.json"):
        list(read_records(tmp_path))


def test_diagnose_reads_its_seed_record_through_the_same_checks(stores, capsys):
    path = record_path(stores.roots[0], "tiny-synthetic", "clip", 0)
    path.parent.mkdir(parents=True)
    path.write_text("{\"task\": ")
    assert main(["diagnose", "--method", "clip", "--task", "tiny-synthetic", *stores]) == 2
    assert f"{path}: not valid JSON" in one_error_line(capsys)
    assert written(stores.roots[1]) == []  # nothing trained, no store opened


def test_out_of_memory_in_one_pair_of_a_cross_product_fails_that_pair_alone(stores, caplog):
    # The method runs out of memory on batches over 32 rows: tiny-synthetic's 64, not single-modality's 32.
    # Its own MLflow store: other tests count the runs in the shared one.
    caplog.set_level(logging.INFO)
    code = main(["run", "--method", "oom-on-large-batches,untrained", "--task", "tiny-synthetic,single-modality",
                 "--trials", "1", "--seeds", "2", "--no-progress", *stores])
    assert code == 1
    kept = sorted((r.task["name"], r.method["name"], r.seed) for r in read_records(stores.roots[0]))
    assert kept == [("single-modality", "oom-on-large-batches", 0), ("single-modality", "oom-on-large-batches", 1),
                    ("single-modality", "untrained", 0), ("single-modality", "untrained", 1),
                    ("tiny-synthetic", "untrained", 0), ("tiny-synthetic", "untrained", 1)]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors[0].startswith("tiny-synthetic/oom-on-large-batches failed: out of memory (Tried to allocate "
                                "2.00 GiB)")
    assert "\n" not in errors[0] and "lower --set batch_size" in errors[0]
    assert errors[1:] == ["1 of 4 runs failed: tiny-synthetic/oom-on-large-batches"]
    assert "Traceback" not in caplog.text


REFERENCE_DAMAGES = {
    "invalid TOML": ("sources.toml", lambda text: text.replace("[[source]]", "[[source]", 1), "TOMLDecodeError"),
    "a source without its file": ("sources.toml", lambda text: text.replace("file = ", "filename = ", 1),
                                  "KeyError"),
    "a number that is not one": ("factorcl_table2.csv", lambda text: text.replace("66.67", "n/a"), "ValueError"),
    "a file it names is gone": ("factorcl_table2.csv", None, "FileNotFoundError"),
}


@pytest.mark.parametrize("damage", list(REFERENCE_DAMAGES))
def test_damaged_reported_numbers_are_one_line_and_no_leaderboard(damage, tmp_path, capsys):
    shutil.copytree(Path(__file__).resolve().parent.parent / "results" / "reference", tmp_path / "reference")
    write_record(tmp_path, _record(0))
    name, change, expected = REFERENCE_DAMAGES[damage]
    path = tmp_path / "reference" / name
    if change is None:
        path.unlink()
    else:
        path.write_text(change(path.read_text()))
    assert main(["leaderboard", "--results", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "reported numbers cannot be read" in line and expected in line
    assert not (tmp_path / "LEADERBOARD.md").exists()


@pytest.mark.parametrize("damage, expected", [
    ("reference without a latent column", "not a CSV of the paper's values with a 'latent' column"),
    ("reference missing", "not a CSV of the paper's values"),
    ("result not JSON", "not a diagnostics result (JSONDecodeError"),
    ("result without estimates", "not a diagnostics result (KeyError"),
])
def test_diagnose_refuses_a_damaged_reference_or_earlier_result_before_training(damage, expected, stores, capsys):
    results, work = stores.roots
    reference = results.parent / "reference.csv"
    previous = results / "diagnostics" / "tiny-synthetic" / "clip.json"
    previous.parent.mkdir(parents=True)
    previous.write_text("{" if damage == "result not JSON" else
                        json.dumps({"symbols": {}, "method": {"display_name": "CLIP"}, "protocol": {}}))
    if damage.startswith("reference"):
        previous.unlink()
        if damage == "reference without a latent column":
            reference.write_text("part,bits\nZ,1.0\n")
    argv = ["diagnose", "--method", "clip", "--task", "tiny-synthetic", *stores]
    assert main(argv + (["--reference", str(reference)] if damage.startswith("reference") else [])) == 2
    assert expected in one_error_line(capsys)
    assert written(work) == [] and not (results / "MI_DIAGNOSTICS.md").exists()


@pytest.mark.parametrize("error, expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB."), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"), True),
    (MemoryError(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"), False),  # a defect, not memory
])
def test_out_of_memory_is_recognised_on_cuda_and_on_cpu_and_nothing_else_is(error, expected):
    assert out_of_memory(error) is expected


def test_a_data_file_damaged_after_a_clean_run_is_refused_before_anything_is_written(stores, capsys):
    from tests.datafiles import write_affect

    data = stores.roots[0].parent / "data"
    data.mkdir()
    path = write_affect(data, "mosi")
    # clip cannot serve single-modality: each run writes that pair's n/a record before any pair trains.
    argv = ["run", "--method", "clip,untrained", "--task", "mosi,single-modality", "--data-dir", str(data),
            "--seeds", "1", "--trials", "1", "--epochs", "1", "--no-progress", *stores]
    assert main(argv) == 0  # loads cleanly: its fingerprint is now cached for the file as it is
    before = {p: Path(p).stat().st_mtime_ns for p in written(*stores.roots)}
    capsys.readouterr()
    path.write_bytes(path.read_bytes()[:-100])  # damaged since: the cached fingerprint no longer applies
    assert main(argv + ["--force"]) == 2
    assert "mosi_data.pkl: not a readable pickle (truncated)" in one_error_line(capsys)
    assert {p: Path(p).stat().st_mtime_ns for p in written(*stores.roots)} == before
