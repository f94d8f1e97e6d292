"""No data file can run code: hostile pickles are refused, with one line and exit code 2, before their payload runs."""

import builtins
import os
import pickle
import pickletools

import numpy as np
import pytest

from harness.cli import main
from tasks.common import safe_pickle
from tests.datafiles import AFFECT, write_affect, write_mimic

PICKLE_TASKS = {**{task: spec[0] for task, spec in AFFECT.items()}, "mimic": "im.pk"}


class ShellPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class ExecPayload(ShellPayload):
    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


class NumpyPayload(ShellPayload):
    """Even a numpy function is refused unless rebuilding arrays needs it: this one writes a file."""

    def __reduce__(self):
        return np.save, (str(self.marker), np.zeros(1))


def write_hostile(task: str, root, payload) -> str:
    """The task's file, valid but for one value deep inside, whose unpickling runs `payload`."""
    if task == "mimic":
        path = write_mimic(root)
        content = pickle.loads(path.read_bytes())
        content["adm_labels_all"] = payload
    else:
        path = write_affect(root, task)
        content = pickle.loads(path.read_bytes())
        content["test"]["id"] = payload
    path.write_bytes(pickle.dumps(content))
    return path.name


def refused_line(capsys, filename: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert filename in err[0] and "refused to load" in err[0] and "could run code" in err[0]
    return err[0]


@pytest.mark.parametrize("task", list(PICKLE_TASKS))
def test_a_hostile_pickle_is_refused_by_data_check_and_its_payload_never_runs(task, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    filename = write_hostile(task, tmp_path, ShellPayload(marker))
    assert main(["data", "check", task, "--data-dir", str(tmp_path)]) == 2
    assert "asks for posix.system" in refused_line(capsys, filename)
    assert not marker.exists()


@pytest.mark.parametrize("task", list(PICKLE_TASKS))
def test_a_hostile_pickle_stops_a_run_before_its_payload_runs(task, harness_run, tmp_path, capsys):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    marker = tmp_path / "payload-ran"
    filename = write_hostile(task, data_dir, ShellPayload(marker))
    assert harness_run("--method", "clip", "--task", task, "--data-dir", str(data_dir), "--seeds", "1") == 2
    refused_line(capsys, filename)
    assert not marker.exists() and not (harness_run.results / "records").exists()


PAYLOADS = {
    "exec": (ExecPayload, "builtins.exec"),
    "numpy function": (NumpyPayload, "numpy.save"),
    "inside an object array": (lambda marker: np.array([ShellPayload(marker)], dtype=object), "posix.system"),
}


@pytest.mark.parametrize("case", list(PAYLOADS))
def test_other_payloads_are_refused_too(case, tmp_path, capsys):
    make, refused = PAYLOADS[case]
    marker = tmp_path / "payload-ran.npy"
    filename = write_hostile("mosi", tmp_path, make(marker))
    assert main(["data", "check", "mosi", "--data-dir", str(tmp_path)]) == 2
    assert f"asks for {refused}" in refused_line(capsys, filename)
    assert not marker.exists()


def test_a_protocol_0_pickle_and_a_persistent_id_are_refused(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    (tmp_path / "im.pk").write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    assert main(["data", "check", "mimic", "--data-dir", str(tmp_path)]) == 2
    assert "asks for os.system" in refused_line(capsys, "im.pk") and not marker.exists()
    (tmp_path / "im.pk").write_bytes(b"\x80\x04P1\n.")  # PERSID: an object the loader would have to supply
    assert main(["data", "check", "mimic", "--data-dir", str(tmp_path)]) == 2
    assert "asks for persistent id" in refused_line(capsys, "im.pk")


def test_protocol_2_byte_strings_decode_as_latin1_only(tmp_path, capsys):
    zlib_codec = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlibq\x00\x86R."
    (tmp_path / "im.pk").write_bytes(zlib_codec)
    assert main(["data", "check", "mimic", "--data-dir", str(tmp_path)]) == 2
    assert "asks for _codecs.encode with encoding 'zlib'" in refused_line(capsys, "im.pk")


def public_like_content() -> dict:
    return {"train": {"vision": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "labels": np.zeros((2, 1, 1)),
                      "id": np.array(["a[0]", "b[1]"]), "names": np.array(["x", 1], dtype=object),
                      "raw": np.array([b"bytes"]), "count": np.float64(2.5), "flag": np.bool_(True)},
            "meta": [1, 2.0, "three", (4, None)]}


def assert_same(a, b) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys() and all(assert_same(a[k], b[k]) is None for k in a)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and (a == b).all()
    else:
        assert type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_files_holding_what_the_public_files_hold_load_as_pickle_loads_them(protocol, tmp_path):
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(public_like_content(), protocol=protocol))
    with path.open("rb") as handle:
        assert_same(public_like_content(), safe_pickle.load(handle))


def test_pickles_written_by_numpy_1_load_too(tmp_path):
    data = pickle.dumps(public_like_content(), protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in pickletools.optimize(data)
    path = tmp_path / "old.pkl"
    path.write_bytes(data)
    with path.open("rb") as handle:
        assert_same(public_like_content(), safe_pickle.load(handle))


@pytest.mark.parametrize("garbage", [b"", b"\x80\x05", b"not a pickle at all", b"\x80\x04\x95" + bytes(range(256))])
def test_garbage_is_one_line_never_a_traceback(garbage, tmp_path, capsys):
    (tmp_path / "humor.pkl").write_bytes(garbage)
    assert main(["data", "check", "ur-funny", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "humor.pkl: not a readable pickle" in err[0], err
