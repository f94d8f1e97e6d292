import copy
import json
import multiprocessing
from dataclasses import asdict
from pathlib import Path

import pytest

from harness.api.errors import HarnessError
from harness.results.identity import differences, run_identity, study_name
from harness.results.records import SCHEMA, Record, has_record, read_record, read_records, record_path, write_record


def make_record(seed=0, **overrides) -> Record:
    fields = dict(task={"name": "t", "version": "1", "suite": "s", "fingerprint": "abc", "params": {}},
                  method={"name": "m", "display_name": "M", "version": "1"}, seed=seed, status="ok",
                  hparams={"lr": 0.001}, protocol={"epochs": 2, "trials": 3, "seeds": 1},
                  metrics={"test_acc": 0.75}, environment={"hardware": "cpu"})
    return Record(**(fields | overrides))


def test_a_record_round_trips(tmp_path):
    path = write_record(tmp_path, make_record(seed=2))
    assert path == record_path(tmp_path, "t", "m", 2) and path.name == "seed2.json"
    assert has_record(tmp_path, "t", "m", 2) and not has_record(tmp_path, "t", "m", 0)
    (loaded,) = read_records(tmp_path)
    assert loaded == make_record(seed=2)


def test_writing_leaves_no_temporary_file(tmp_path):
    write_record(tmp_path, make_record())
    assert [p.name for p in (tmp_path / "records" / "t" / "m").iterdir()] == ["seed0.json"]


def test_a_record_of_another_schema_is_refused(tmp_path):
    path = write_record(tmp_path, make_record())
    path.write_text(json.dumps(json.loads(path.read_text()) | {"schema": 99}))
    with pytest.raises(HarnessError, match="schema 99"):
        list(read_records(tmp_path))


def schema_1_record(path, **fields) -> None:
    """A record as the harness wrote it before run identities were stored."""
    data = asdict(make_record(**fields))
    del data["identity"], data["encoder"], data["notes"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data | {"schema": 1}))


def test_a_schema_1_record_is_read_through_its_migration(tmp_path):
    schema_1_record(record_path(tmp_path, "t", "m", 0))
    (loaded,) = read_records(tmp_path)
    assert loaded.schema == SCHEMA == 4 and loaded.encoder == ""  # its readers compute it
    assert loaded.notes == {}  # a record made before notes existed stated none
    assert loaded.identity == {"task": {"name": "t", "version": "1", "params": {}, "fingerprint": "abc"},
                               "method": {"name": "m", "version": "1"},
                               "protocol": {"epochs": 2, "trials": 3, "seeds": 1, "batch_size": None},
                               "fixed": None}  # which values were fixed, schema 1 never said


def test_a_records_notes_round_trip_and_a_schema_3_record_states_none(tmp_path):
    notes = {"guide_training_data": "a pool of 6 pairs", "guide_pool_members": "all 12"}
    path = write_record(tmp_path, make_record(notes=notes))
    assert read_record(path).notes == notes
    data = json.loads(path.read_text())
    del data["notes"]
    path.write_text(json.dumps(data | {"schema": 3}))
    assert read_record(path).notes == {} and read_record(path).schema == 4
    path.write_text(json.dumps(data | {"notes": {"guide": 3}}))
    with pytest.raises(HarnessError, match="record field 'notes.guide' holds a int"):
        read_record(path)


def test_a_migrated_record_matches_a_request_whose_fixed_values_it_holds(tmp_path):
    schema_1_record(record_path(tmp_path, "t", "m", 0), hparams={"lr": 0.001, "embed_dim": 64})
    (old,) = read_records(tmp_path)
    asked = run_identity(old.task, old.method, old.protocol, {"embed_dim": 64})
    assert differences(old.identity, asked, old.hparams) == []
    found = differences(old.identity, asked | {"fixed": {"embed_dim": 128}}, old.hparams)
    assert [str(d) for d in found] == ["recorded with embed_dim=64, asked for embed_dim=128"]


def test_a_record_of_a_newer_schema_says_how_to_regenerate_it(tmp_path):
    path = write_record(tmp_path, make_record())
    path.write_text(json.dumps(json.loads(path.read_text()) | {"schema": SCHEMA + 1}))
    with pytest.raises(HarnessError, match=f"schema {SCHEMA + 1} is not one this harness reads .1 to {SCHEMA}.; "
                                           "upgrade the harness"):
        list(read_records(tmp_path))


def test_identities_differ_in_every_part_they_hold():
    base = run_identity({"name": "t", "version": "1", "params": {"setting": {"n": 10}}, "fingerprint": "f"},
                        {"name": "m", "version": "1"}, {"epochs": 6, "trials": 6, "seeds": 3, "batch_size": 256},
                        {"lr": 0.001})
    assert differences(base, base) == []
    cases = {
        "recorded with 6 epochs, asked for 1": ("protocol", "epochs", 1),
        "recorded with 6 trials, asked for 2": ("protocol", "trials", 2),
        "recorded with 3 seeds, asked for 5": ("protocol", "seeds", 5),
        "recorded with batch size 256, asked for batch size 64": ("protocol", "batch_size", 64),
        "recorded with task version 1, asked for task version 2": ("task", "version", "2"),
        "recorded with method version 1, asked for method version 2": ("method", "version", "2"),
        "recorded with data fingerprint f, asked for data fingerprint g": ("task", "fingerprint", "g"),
        "recorded with task parameter setting.n=10, asked for task parameter setting.n=11":
            ("task", "params", {"setting": {"n": 11}}),
        "recorded with lr=0.001, asked for lr=0.002": ("fixed", "lr", 0.002),
    }
    for says, (part, key, value) in cases.items():
        asked = copy.deepcopy(base)
        asked[part][key] = value
        assert [str(d) for d in differences(base, asked)] == [says]


def test_the_study_name_leaves_out_seeds_and_budget_but_not_fixed_values():
    base = run_identity({"name": "t", "version": "1"}, {"name": "m", "version": "1"},
                        {"epochs": 6, "trials": 6, "seeds": 3, "batch_size": 256}, {"lr": 0.001})
    more = copy.deepcopy(base)
    more["protocol"] |= {"seeds": 5, "trials": 9}
    assert study_name(more) == study_name(base) and study_name(base).startswith("t@1/m@1/e6/")
    assert study_name(base | {"fixed": {"lr": 0.002}}) != study_name(base)


def _write_many(root: str, writer: int, count: int) -> None:
    for i in range(count):
        write_record(Path(root), make_record(metrics={"test_acc": float(i), "writer": float(writer)}))


def test_processes_writing_one_record_at_once_never_fail_and_leave_a_whole_record(tmp_path):
    """Two workers that settle the same seed (one copies the other's record) write one file at once.
    Through one shared temporary name this failed with FileNotFoundError (231 times in 4,000 writes)."""
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), w, 400)) for w in range(3)]
    for writer in writers:
        writer.start()
    _write_many(str(tmp_path), 9, 400)  # and this process beside them
    for writer in writers:
        writer.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    (record,) = read_records(tmp_path)  # whole and valid JSON, whoever wrote last
    assert record.metrics["test_acc"] == 399.0
    assert [p.name for p in (tmp_path / "records" / "t" / "m").iterdir()] == ["seed0.json"]  # no temporary left


def test_a_replaced_record_is_kept_beside_and_never_over_an_earlier_kept_one(tmp_path, monkeypatch):
    from datetime import datetime, timezone

    from harness.results import replacing

    class Frozen(datetime):  # every move at one instant: the names must still differ
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 7, 13, 0, tzinfo=timezone.utc)

    monkeypatch.setattr(replacing, "datetime", Frozen)
    texts = []
    for acc in (0.1, 0.2, 0.3):
        path = write_record(tmp_path, make_record(metrics={"test_acc": acc}))
        texts.append(path.read_bytes())
        replacing.set_aside(path)
    kept = sorted((path.parent / "replaced").iterdir())
    assert [p.name for p in kept] == ["seed0.20261207T130000.000000Z-1.json", "seed0.20261207T130000.000000Z-2.json",
                                      "seed0.20261207T130000.000000Z.json"]
    assert sorted(p.read_bytes() for p in kept) == sorted(texts) and not path.exists()
    assert list(read_records(tmp_path)) == []  # nothing reads from replaced/
    assert replacing.set_aside(path) is None  # nothing there to keep


def test_writing_a_record_a_file_already_holds_leaves_the_file_untouched(tmp_path):
    path = write_record(tmp_path, make_record())
    before = path.stat().st_mtime_ns, path.stat().st_ino
    write_record(tmp_path, make_record())
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
    write_record(tmp_path, make_record(metrics={"test_acc": 0.5}))
    assert read_record(path).metrics == {"test_acc": 0.5}
