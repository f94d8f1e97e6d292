"""Generated bad input thrown at every command, in-process.

Each example is built to be wrong in at least one way: names that are not
registered, budgets below one, malformed or out-of-domain --set values, devices,
URIs and storages that cannot be used, folders that do not exist, options that
do not exist, a task the method or command cannot use, and damaged files
(truncated, wrong types, wrong shapes, missing fields, invalid JSON, non-UTF-8,
paths that cannot be read, hostile pickles). Whatever the mix, the command must
end with exit code 2 and one line on stderr: never a traceback, never a record
or store written, never a pickle's payload run.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import socket
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.api.catalog import METHODS, TASKS
from harness.cli import main
from harness.results.records import SCHEMA, Record, write_record
from harness.running.request import is_device_name
from tests.datafiles import AFFECT_ROWS, write_affect, write_mimic

# Deterministic (the same examples on every run and machine), no example database written into the
# repository, and small enough that the whole file runs in seconds.
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# A shell cannot pass NUL inside an argument; anything else may arrive, line breaks included.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=16)


ARGUMENT = TEXT.filter(lambda t: not t.startswith("-"))  # "-h" asks for help, which is no error


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) with stdout, stderr and the harness's log lines captured as a terminal would show them."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    logging.getLogger().addHandler(handler)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)  # an exception escaping here is a traceback: the example fails
    finally:
        logging.getLogger().removeHandler(handler)
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(code: int, out: str, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and out == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# -- bad command lines ---------------------------------------------------------------------------

def _unknown(registry) -> st.SearchStrategy[str]:
    """Comma lists with at least one unregistered name, or no name at all."""
    def bad(text: str) -> bool:
        names = [n.strip() for n in text.split(",") if n.strip()]
        return not names or any(n not in registry for n in names)
    return TEXT.filter(bad)


def _not_a_count(minimum: int) -> st.SearchStrategy[str]:
    def bad(text: str) -> bool:
        try:
            return int(text) < minimum
        except ValueError:
            return True
    return st.integers(max_value=minimum - 1).map(str) | TEXT.filter(bad)


def _not_a_number(text: str) -> bool:
    try:
        float(text)
        return False
    except ValueError:
        return True


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


NEGATIVE = st.floats(max_value=-1e-300, allow_nan=False, allow_infinity=False)
NOT_POSITIVE = st.floats(max_value=0.0, allow_nan=False, allow_infinity=False)
OUT_OF_DOMAIN = st.one_of(  # keys clip and the harness declare, with values outside their domains
    st.tuples(st.sampled_from(["lr", "init_temperature"]), NOT_POSITIVE.map(repr)),
    st.tuples(st.just("weight_decay"), NEGATIVE.map(repr)),
    st.tuples(st.just("embed_dim"), st.integers(max_value=0).map(str)),
    st.tuples(st.just("embed_dim"), st.floats(1.01, 1e6).filter(lambda v: v != int(v)).map(repr)),
    st.tuples(st.just("batch_size"), st.integers(max_value=1).map(str)),
    st.tuples(st.sampled_from(["lr", "weight_decay", "batch_size", "embed_dim"]),
              TEXT.filter(lambda t: "=" not in t and t.strip() and _not_a_number(t.strip()))),
    st.tuples(st.sampled_from(["lr", "embed_dim"]), st.sampled_from(["nan", "inf", "-inf", "true", "1e999"])),
)
KNOWN_KEYS = {"lr", "weight_decay", "batch_size", "embed_dim", "init_temperature"}


def _flag(name: str, values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return values.map(lambda value: [name, value])


MUTATIONS = {  # each is wrong on its own, so any mix of them is wrong too
    "unknown method": _flag("--method", _unknown(METHODS)),
    "unknown task": _flag("--task", _unknown(TASKS)),
    "bad epochs": _flag("--epochs", _not_a_count(1)),
    "malformed --set": _flag("--set", TEXT.filter(lambda t: "=" not in t) | TEXT.map(lambda t: f"={t}")
                             | TEXT.filter(lambda t: "=" not in t).map(lambda t: f"{t}=")),
    "unknown --set key": _flag("--set", st.tuples(TEXT.filter(lambda t: "=" not in t and t.strip() not in KNOWN_KEYS
                                                              and t.strip()), TEXT.filter(str.strip))
                               .map("=".join)),
    "out-of-domain --set": _flag("--set", OUT_OF_DOMAIN.map("=".join)),
    "bad device": _flag("--device", TEXT.filter(lambda t: not is_device_name(t))),  # cuda:0 is good on a GPU
    "file-store tracking URI": _flag("--tracking-uri", TEXT.filter(lambda t: "://" not in t)
                                     | TEXT.map(lambda t: f"file://{t}")),
    "missing data dir": _flag("--data-dir", TEXT.map(lambda t: f"/no/such/dir/{t}")),
    "unknown option": TEXT.map(lambda t: [f"--no-such-option-{t}"]),
    "task the method cannot serve": st.just(["--method", "clip", "--task", "single-modality"]),
    "store folder on a file": st.tuples(st.sampled_from(["--results", "--workdir"]), ARGUMENT.filter(
        lambda t: "/" not in t and t not in (".", ".."))).map(lambda ft: [ft[0], str(Path(__file__) / ft[1])]),
}
RUN_ONLY = {
    "bad trials": _flag("--trials", _not_a_count(1)),
    "bad seeds": _flag("--seeds", _not_a_count(1)),
    "bad storage": _flag("--storage", TEXT.filter(lambda t: "://" not in t and not t.endswith((".journal", ".log")))
                         | st.sampled_from(["sqlite:////no/such/dir/optuna.db", "no-such-dialect://x"])
                         | st.builds(lambda: f"postgresql://u:p@127.0.0.1:{_closed_port()}/db")),
}
DIAGNOSE_ONLY = {
    "bad seed": _flag("--seed", _not_a_count(0) | st.integers(min_value=2**32).map(str)),
    "task without side variables": st.just(["--method", "untrained", "--task", "single-modality"]),
}


def _command_lines(command: str, base: list[str], mutations: dict) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(sorted(mutations)).flatmap(mutations.get), min_size=1, max_size=3).map(
        lambda chosen: [command, *base, *(token for tokens in chosen for token in tokens)])


RUN_LINES = _command_lines("run", ["--method", "clip", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1",
                                   "--epochs", "1", "--no-progress"], MUTATIONS | RUN_ONLY)
DIAGNOSE_LINES = _command_lines("diagnose", ["--method", "clip", "--task", "tiny-synthetic", "--epochs", "1",
                                             "--no-progress"], MUTATIONS | DIAGNOSE_ONLY)


@pytest.mark.parametrize("lines", [RUN_LINES, DIAGNOSE_LINES], ids=["run", "diagnose"])
def test_a_bad_command_line_is_one_line_exit_2_and_writes_nothing(lines):
    @FUZZ
    @given(argv=lines)
    def check(argv):
        with tempfile.TemporaryDirectory() as tmp:
            stores = ["--results", f"{tmp}/results", "--workdir", f"{tmp}/work"]
            # Later flags win in argparse: the throwaway stores go first so a generated one is not overridden.
            assert_one_error_line(*run_cli(argv[:1] + stores + argv[1:]))
            assert files_under(Path(tmp)) == []

    check()


OTHER_LINES = st.one_of(
    st.tuples(st.just("list"), ARGUMENT.filter(lambda t: t not in ("methods", "tasks"))).map(list),
    st.tuples(st.just("data"), st.just("check"), ARGUMENT.filter(lambda t: t not in TASKS)).map(list),
    st.just(["data", "check", "mosi"]),  # a task whose files are missing
    st.tuples(st.just("data"), TEXT.filter(lambda t: t != "check" and not t.startswith("-"))).map(list),
    TEXT.filter(lambda t: t not in ("run", "leaderboard", "diagnose", "list", "data") and not t.startswith("-"))
    .map(lambda t: [t]),
    st.tuples(st.sampled_from(["leaderboard", "list", "data"]), TEXT.map(lambda t: f"--no-such-option-{t}")).map(list),
    st.just([]),
)


@FUZZ
@given(argv=OTHER_LINES)
def test_the_other_commands_refuse_bad_arguments_in_one_line(argv):
    assert_one_error_line(*run_cli(argv))


# -- damaged records -----------------------------------------------------------------------------

def _valid_record(seed: int) -> dict:
    record = Record(task={"name": "tiny-synthetic", "version": "1", "suite": "tests"},
                    method={"name": "clip", "display_name": "CLIP", "version": "1"}, seed=seed, status="ok",
                    hparams={"lr": 1e-3, "embed_dim": 16, "batch_size": 64}, metrics={"test_acc": 0.9},
                    protocol={"epochs": 1, "trials": 1, "seeds": 1})
    return json.loads(json.dumps(record.__dict__))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=5)
WRONG_TYPE = {  # field -> a value of a type it never holds
    "task": JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
    "metrics": JSON_VALUES.filter(lambda v: not isinstance(v, dict)),
    "seed": JSON_VALUES.filter(lambda v: v is not None and (isinstance(v, bool) or not isinstance(v, int))),
    "status": JSON_VALUES.filter(lambda v: not isinstance(v, str)),
    "schema": JSON_VALUES.filter(lambda v: v != SCHEMA or isinstance(v, bool)),
    "wall_time_s": JSON_VALUES.filter(lambda v: isinstance(v, bool) or not isinstance(v, (int, float))),
}


def _damage(draw_from) -> st.SearchStrategy[bytes]:
    """A record's bytes, damaged in one of the ways a crash, an editor or a bad merge leaves them."""
    text = json.dumps(draw_from, indent=2)

    def with_field(name, value):
        return json.dumps(draw_from | {name: value}).encode()

    def without(name):
        return json.dumps({k: v for k, v in draw_from.items() if k != name}).encode()

    return st.one_of(
        st.integers(0, len(text.rstrip()) - 1).map(lambda cut: text[:cut].encode()),
        st.sampled_from(["task", "method", "seed", "status"]).map(without),
        st.sampled_from(sorted(WRONG_TYPE)).flatmap(lambda k: WRONG_TYPE[k].map(lambda v: with_field(k, v))),
        st.tuples(st.text(min_size=1).filter(lambda k: k not in Record.__dataclass_fields__), JSON_VALUES)
        .map(lambda kv: with_field(*kv)),
        JSON_VALUES.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
        JSON_VALUES.filter(lambda v: isinstance(v, bool) or not isinstance(v, (int, float)))
        .map(lambda v: with_field("metrics", {"test_acc": v})),
        st.binary(min_size=1).map(lambda b: b"\xff" + b),  # not UTF-8
    )


DAMAGED = _damage(_valid_record(0))


@FUZZ
@given(damaged=DAMAGED, check=st.booleans())
def test_the_leaderboard_names_a_damaged_record_and_writes_nothing(damaged, check):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_record(root, Record(**_valid_record(1)))
        path = write_record(root, Record(**_valid_record(0)))
        path.write_bytes(damaged)
        line = assert_one_error_line(*run_cli(["leaderboard", "--results", tmp] + (["--check"] if check else [])))
        assert str(path) in line
        assert not (root / "LEADERBOARD.md").exists()


@FUZZ
@given(damaged=DAMAGED)
def test_diagnose_names_a_damaged_seed_record_before_any_work(damaged):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_record(Path(tmp) / "results", Record(**_valid_record(0)))
        path.write_bytes(damaged)
        line = assert_one_error_line(*run_cli(["diagnose", "--method", "clip", "--task", "tiny-synthetic",
                                               "--results", f"{tmp}/results", "--workdir", f"{tmp}/work"]))
        assert str(path) in line
        assert files_under(Path(tmp) / "work") == [] and files_under(Path(tmp) / "results") == [path]


def test_a_record_that_cannot_be_read_is_named(tmp_path, capsys):
    path = write_record(tmp_path, Record(**_valid_record(0)))
    path.unlink()
    path.mkdir()  # a folder where the file should be: reading it fails as an unreadable file does
    assert "cannot read this record" in assert_one_error_line(*run_cli(["leaderboard", "--results", str(tmp_path)]))


# -- damaged data files --------------------------------------------------------------------------

SPLITS = sorted(AFFECT_ROWS)
KEYS = ["vision", "text", "labels"]
NOT_AN_ARRAY = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.dictionaries(st.text(max_size=3),
                                                                                       st.integers(), max_size=2),
                         st.lists(st.text(max_size=3), min_size=1, max_size=3))
WRONG_SHAPE = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(lambda shape: np.zeros(shape, np.float32))

AFFECT_DAMAGE = st.one_of(
    st.tuples(st.sampled_from(SPLITS), st.sampled_from(KEYS), NOT_AN_ARRAY | WRONG_SHAPE),
    st.sampled_from(SPLITS).flatmap(lambda split: st.floats(3.01, 1e9).map(
        lambda v: (split, "labels", np.full((AFFECT_ROWS[split], 1), v, np.float32)))),  # outside [-3, 3]
)


@FUZZ
@given(damage=AFFECT_DAMAGE, command=st.sampled_from(["data", "run"]))
def test_a_pickle_with_wrong_keys_types_or_shapes_is_one_line(damage, command):
    split, key, value = damage  # a value of None deletes the key
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        write_affect(data, "mosi", arrays={(split, key): value})
        _assert_refused(command, "mosi", data, Path(tmp))


@FUZZ
@given(cut=st.floats(0.0, 0.999), task=st.sampled_from(["mosi", "mimic"]), command=st.sampled_from(["data", "run"]))
def test_a_truncated_pickle_is_one_line(cut, task, command):
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        path = write_affect(data, "mosi") if task == "mosi" else write_mimic(data)
        content = path.read_bytes()
        path.write_bytes(content[: int(cut * len(content))])
        _assert_refused(command, task, data, Path(tmp))


@pytest.mark.parametrize("task", ["mosi", "mimic"])
def test_a_folder_in_place_of_the_pickle_is_one_line(task, tmp_path):
    name = "mosi_data.pkl" if task == "mosi" else "im.pk"
    (tmp_path / "data" / name).mkdir(parents=True)
    _assert_refused("data", task, tmp_path / "data", tmp_path)


def _assert_refused(command: str, task: str, data: Path, tmp: Path) -> None:
    method = "clip" if task == "mosi" else "untrained"
    argv = (["data", "check", task, "--data-dir", str(data)] if command == "data" else
            ["run", "--method", method, "--task", task, "--data-dir", str(data), "--results", f"{tmp}/results",
             "--workdir", f"{tmp}/work", "--no-progress"])
    assert_one_error_line(*run_cli(argv))
    assert files_under(tmp / "results") == [] and files_under(tmp / "work") == []


# -- hostile pickles -----------------------------------------------------------------------------

class _Payload:
    """Unpickling this creates `marker`: a stand-in for any code a downloaded pickle could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("where", ["top level", "as a split", "as an array"])
@pytest.mark.parametrize("command", ["data", "run"])
def test_a_hostile_pickle_is_refused_and_its_payload_never_runs(where, command, tmp_path):
    data, marker = tmp_path / "data", tmp_path / "payload-ran"
    data.mkdir()
    payload = _Payload(marker)
    if where == "top level":
        (data / "mosi_data.pkl").write_bytes(pickle.dumps(payload))
    else:
        path = write_affect(data, "mosi")
        content = pickle.loads(path.read_bytes())
        if where == "as a split":
            content["valid"] = payload
        else:
            content["train"]["vision"] = payload
        path.write_bytes(pickle.dumps(content))
    _assert_refused(command, "mosi", data, tmp_path)
    assert not marker.exists(), "the pickle's payload ran"


# -- the README says what is checked, and this file checks it -------------------------------------

# Each class the README's "Bad input" list names, and the generators and tests here that cover it.
COVERAGE = {
    "names": ["unknown method", "unknown task", "unknown option", "task the method cannot serve",
              "task without side variables", "test_the_other_commands_refuse_bad_arguments_in_one_line"],
    "budgets": ["bad trials", "bad seeds", "bad epochs", "bad seed"],
    "hyperparameters": ["malformed --set", "unknown --set key", "out-of-domain --set"],
    "places": ["bad device", "file-store tracking URI", "bad storage", "missing data dir", "store folder on a file"],
    "damaged records": ["test_the_leaderboard_names_a_damaged_record_and_writes_nothing",
                        "test_diagnose_names_a_damaged_seed_record_before_any_work",
                        "test_a_record_that_cannot_be_read_is_named"],
    "damaged data": ["test_a_pickle_with_wrong_keys_types_or_shapes_is_one_line", "test_a_truncated_pickle_is_one_line",
                     "test_a_folder_in_place_of_the_pickle_is_one_line",
                     "test_a_hostile_pickle_is_refused_and_its_payload_never_runs",
                     "test_the_other_commands_refuse_bad_arguments_in_one_line"],  # data check on missing files
}


def test_the_readme_lists_exactly_the_classes_of_bad_input_this_suite_generates():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = re.search(r"### Bad input\n(.*?)\n(?=#)", readme, flags=re.S).group(1)
    assert re.findall(r"^- \*\*(.+?)\*\*", section, flags=re.M) == list(COVERAGE)
    generators = set(MUTATIONS) | set(RUN_ONLY) | set(DIAGNOSE_ONLY)
    for covered_by in COVERAGE.values():
        assert all(name in generators or name in globals() for name in covered_by), covered_by
