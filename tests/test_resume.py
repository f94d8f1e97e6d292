"""What a run reuses is decided by its full identity: a record made otherwise is refused, retrained with --force
(the old one kept in replaced/), or kept with --keep-old."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from harness.api.catalog import METHODS, TASKS
from harness.cli import index
from harness.results.records import read_records
from harness.running import workdir
from tests.datafiles import write_affect

ROOT = Path(__file__).resolve().parents[1]
CLIP = ("--method", "clip", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1")


def seed0(harness_run, task="tiny-synthetic", method="clip") -> dict:
    return json.loads((harness_run.results / "records" / task / method / "seed0.json").read_text())


def kept(harness_run, task="tiny-synthetic", method="clip") -> list[Path]:
    """The records a --force run replaced, kept beside the pair's records."""
    return sorted((harness_run.results / "records" / task / method / "replaced").glob("*.json"))


def refused(harness_run, capsys, *args) -> str:
    """Run a command that must be refused: exit 2, one line, and nothing in its results folder changed."""
    before = {p: p.read_bytes() for p in harness_run.results.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert harness_run(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "were made under another identity" in err and "--force" in err
    assert {p: p.read_bytes() for p in harness_run.results.rglob("*") if p.is_file()} == before
    return err


def studies(harness_run) -> list[str]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(harness_run.workdir / "optuna.journal")))
    return sorted(s.study_name for s in optuna.get_all_study_summaries(storage))


@pytest.mark.parametrize("change, says", [
    (("--epochs", "2"), "recorded with 1 epochs, asked for 2"),
    (("--trials", "2"), "recorded with 1 trials, asked for 2"),
    (("--set", "weight_decay=0.001"), "recorded with weight_decay=1e-05, asked for weight_decay=0.001"),
    (("--set", "lr=0.0001234"), "recorded with lr tuned, asked for lr=0.0001234"),
])
def test_a_changed_protocol_or_fixed_value_is_refused_and_with_force_retrains_keeping_the_old(
        harness_run, caplog, capsys, change, says):
    assert harness_run(*CLIP) == 0
    old = (harness_run.results / "records" / "tiny-synthetic" / "clip" / "seed0.json").read_bytes()
    first = seed0(harness_run)["finished_at"], seed0(harness_run)["mlflow_run_id"]
    assert says in refused(harness_run, capsys, *CLIP, *change)
    caplog.clear()
    assert harness_run(*CLIP, *change, "--force") == 0
    notes = [r.message for r in caplog.records if "another identity" in r.message]
    assert len(notes) == 1 and says in notes[0] and "as --force asks" in notes[0]
    assert [p.read_bytes() for p in kept(harness_run)] == [old]
    record = seed0(harness_run)
    assert (record["finished_at"], record["mlflow_run_id"]) != first
    assert record["identity"]["protocol"]["epochs"] == (2 if "--epochs" in change else 1)
    caplog.clear()
    assert harness_run(*CLIP, *change) == 0  # the same command again: its record now stands for it
    assert "nothing to train" in caplog.text and "another identity" not in caplog.text


def test_keep_old_keeps_the_records_trains_nothing_and_says_so(harness_run, caplog):
    assert harness_run(*CLIP) == 0
    before = {p: p.read_bytes() for p in harness_run.results.rglob("*") if p.is_file()}
    caplog.clear()
    assert harness_run(*CLIP, "--epochs", "2", "--keep-old") == 0
    assert "keeping 1 seed record(s) made under another identity (recorded with 1 epochs, asked for 2)" in caplog.text
    assert "seed 0: test acc" not in caplog.text  # nothing trained
    assert {p: p.read_bytes() for p in harness_run.results.rglob("*") if p.is_file()} == before


def test_a_value_given_with_set_is_the_recorded_value_even_beside_an_old_study(harness_run):
    assert harness_run(*CLIP) == 0  # tunes lr: this pair's study now exists in the work folder
    tuned_lr = seed0(harness_run)["hparams"]["lr"]
    assert harness_run(*CLIP, "--set", "lr=0.0001234", "--force") == 0  # embed_dim is still tuned: a study runs
    record = seed0(harness_run)
    assert record["hparams"]["lr"] == 0.0001234 != tuned_lr and record["identity"]["fixed"]["lr"] == 0.0001234
    assert len(studies(harness_run)) == 2  # another search space, another study: the old one was not read


def test_a_new_method_or_task_version_is_refused_and_retrained_with_force(harness_run, caplog, capsys, monkeypatch):
    args = ("--method", "untrained", "--task", "tiny-synthetic", "--seeds", "1")
    assert harness_run(*args) == 0
    # A version changes in the source, which rebuilds the metadata index; in-process, both are patched.
    monkeypatch.setattr(METHODS.get("untrained"), "version", "99")
    monkeypatch.setitem(index.method_info("untrained"), "version", "99")
    assert "recorded with method version 1, asked for method version 99" in refused(harness_run, capsys, *args)
    caplog.clear()
    assert harness_run(*args, "--force") == 0
    assert "recorded with method version 1, asked for method version 99" in caplog.text
    monkeypatch.setattr(TASKS.get("tiny-synthetic"), "version", "7")
    monkeypatch.setitem(index.task_info("tiny-synthetic")["identity"], "version", "7")
    caplog.clear()
    assert harness_run(*args, "--force") == 0
    assert "recorded with task version 1, asked for task version 7" in caplog.text
    assert len(kept(harness_run, method="untrained")) == 2  # each replaced record kept, none over another
    assert seed0(harness_run, method="untrained")["identity"]["method"]["version"] == "99"


def test_new_data_retrain_with_force_and_an_unchanged_run_loads_no_data(harness_run, tmp_path, caplog, capsys,
                                                                        monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    write_affect(data, "mosi")
    args = ("--method", "raw-features", "--task", "mosi", "--seeds", "1", "--data-dir", str(data))
    assert harness_run(*args) == 0
    recorded = seed0(harness_run, "mosi", "raw-features")["identity"]["task"]["fingerprint"]

    def no_loading(self):
        raise AssertionError("an unchanged run loaded the data")

    with monkeypatch.context() as patch:  # the fingerprint comes from the work folder's cache
        patch.setattr(TASKS.get("mosi"), "load", no_loading)
        caplog.clear()
        assert harness_run(*args) == 0
        assert "nothing to train" in caplog.text
    write_affect(data, "mosi", arrays={("test", "vision"): np.ones((12, 50, 20), np.float32)})
    says = f"recorded with data fingerprint {recorded}, asked for data fingerprint"
    assert says in refused(harness_run, capsys, *args)
    caplog.clear()
    assert harness_run(*args, "--force") == 0
    assert says in caplog.text
    assert seed0(harness_run, "mosi", "raw-features")["identity"]["task"]["fingerprint"] != recorded


def test_fewer_seeds_are_refused_and_with_force_retrained_keeping_the_seeds_beyond_aside(harness_run, caplog, capsys):
    args = ("--method", "untrained", "--task", "tiny-synthetic")
    assert harness_run(*args, "--seeds", "3") == 0
    old = {p.name: p.read_bytes() for p in (harness_run.results / "records" / "tiny-synthetic" / "untrained").glob("*")}
    history = harness_run.results / "history" / "tiny-synthetic" / "untrained.json"
    old_history = history.read_bytes()
    assert "recorded with 3 seeds, asked for 2" in refused(harness_run, capsys, *args, "--seeds", "2")
    caplog.clear()
    assert harness_run(*args, "--seeds", "2", "--force") == 0
    assert "recorded with 3 seeds, asked for 2" in caplog.text
    assert sorted(r.seed for r in read_records(harness_run.results)) == [0, 1]
    assert {r.identity["protocol"]["seeds"] for r in read_records(harness_run.results)} == {2}
    # Every old record, seed 2 included, is kept byte for byte, and so is the history its curves were in.
    assert sorted(p.read_bytes() for p in kept(harness_run, method="untrained")) == sorted(old.values())
    assert [p.name.split(".")[0] for p in kept(harness_run, method="untrained")] == ["seed0", "seed1", "seed2"]
    (old_curves,) = (history.parent / "replaced").glob("untrained.*.json")
    assert old_curves.read_bytes() == old_history and sorted(json.loads(history.read_text())["seeds"]) == ["0", "1"]


def test_force_retrains_records_that_stand_for_the_run(harness_run, caplog):
    args = ("--method", "untrained", "--task", "tiny-synthetic", "--seeds", "1")
    assert harness_run(*args) == 0
    path = harness_run.results / "records" / "tiny-synthetic" / "untrained" / "seed0.json"
    first, old = seed0(harness_run, method="untrained")["mlflow_run_id"], path.read_bytes()
    assert harness_run(*args, "--force") == 0
    assert seed0(harness_run, method="untrained")["mlflow_run_id"] != first
    assert [p.read_bytes() for p in kept(harness_run, method="untrained")] == [old]  # the record it replaced


def test_a_run_its_records_already_answer_imports_no_torch(harness_run, tmp_path):
    args = ["--method", "untrained", "--task", "synthetic", "--seeds", "2"]
    assert harness_run(*args) == 0  # records the seeds and caches the data's fingerprint
    argv = ["run", *args, "--results", str(harness_run.results), "--workdir", str(harness_run.workdir)]
    check = (f"import sys\nfrom harness.cli import main\ncode = main({argv!r})\n"
             "heavy = sorted(m for m in ('torch', 'sklearn', 'mlflow', 'optuna') if m in sys.modules)\n"
             "assert code == 0 and not heavy, (code, heavy)\n")
    # The metadata index is built (importing torch) once per source state; the test times none of that.
    env = {**os.environ, workdir.CACHE_ENV: str(tmp_path / "index-cache")}
    subprocess.run([sys.executable, "-c", "from harness.cli import index; index.method_names(); index.task_info('synthetic')"],
                   cwd=ROOT, env=env, check=True)
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "synthetic  untrained" in done.stdout and "(2)" in done.stdout  # the closing table, from the records
    assert "nothing to train" in done.stderr


def test_a_run_with_a_seed_missing_takes_the_full_path(harness_run, caplog):
    args = ("--method", "untrained", "--task", "tiny-synthetic", "--seeds", "2")
    assert harness_run(*args) == 0
    (harness_run.results / "records" / "tiny-synthetic" / "untrained" / "seed1.json").unlink()
    caplog.clear()
    assert harness_run(*args) == 0
    # The full path ran: it finds seed 1 settled in the work folder's study and writes its record again.
    assert "untrained: 0 seed(s) trained and recorded, 1 recorded by other workers" in caplog.text
    assert sorted(r.seed for r in read_records(harness_run.results)) == [0, 1]


def test_deciding_what_to_resume_imports_no_torch():
    code = ("import sys, harness.results.identity, harness.running.resume, harness.results.fingerprints, harness.results.records; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
