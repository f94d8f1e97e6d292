import json

import pytest

from harness.errors import HarnessError
from harness.records import Record, has_record, read_records, record_path, write_record


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
