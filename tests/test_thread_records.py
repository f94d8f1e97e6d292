"""A run at a given thread count gives the same record under load as on a free machine; the record says its
count, and `harness reproduce` trains at it (issue 37)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.running.runner import PairRunner

RUN = ["--method", "thread-sensitive-clip", "--task", "tiny-synthetic", "--trials", "1", "--seeds", "1"]
VARYING = ("wall_time_s", "peak_memory_mb", "finished_at", "mlflow_run_id")  # what any two runs differ in


def run(folder: Path, tracking_uri: str, *extra: str) -> dict:
    """One `harness run` into `folder`: its seed's record, less what differs between any two runs."""
    assert main(["run", *RUN, *extra, "--results", str(folder / "results"), "--workdir", str(folder / "work"),
                 "--tracking-uri", tracking_uri, "--no-progress", "--allow-dirty"]) == 0
    path = folder / "results" / "records" / "tiny-synthetic" / "thread-sensitive-clip" / "seed0.json"
    record = json.loads(path.read_text())
    return {key: value for key, value in record.items() if key not in VARYING}


def burning(cores: int) -> list[subprocess.Popen]:
    """A spinning process per core. At the lowest priority: the cores count as busy all the same (a count that
    followed the load would drop to 1), but the run's spinning threads are not made to crawl beside them."""
    return [subprocess.Popen([sys.executable, "-c", "import os; os.nice(19)\nwhile True: pass"])
            for _ in range(cores)]


def test_the_same_count_gives_the_same_record_under_load_and_without(tmp_path, tracking_uri):
    free = run(tmp_path / "free", tracking_uri, "--threads", "2")
    burners = burning(os.cpu_count() or 1)  # every core busy, as a loaded machine's
    try:
        loaded = run(tmp_path / "loaded", tracking_uri, "--threads", "2")
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    one = run(tmp_path / "one", tracking_uri, "--threads", "1")
    assert free["environment"]["threads"] == loaded["environment"]["threads"] == 2
    assert one["environment"]["threads"] == 1
    assert loaded == free  # metrics, checks (the weights), hyperparameters: bit for bit
    # The count matters: at 1 thread the same run trains other weights, so a count that followed the load
    # (1 beside the burners, 2 without) could not have given one record.
    assert one["checks"]["weights_sum"]["value"] != free["checks"]["weights_sum"]["value"]


def reproduce(record: Path, workdir: Path, tracking_uri: str) -> int:
    return main(["reproduce", str(record), "--workdir", str(workdir), "--tracking-uri", tracking_uri,
                 "--no-progress"])


def test_reproduce_trains_at_the_records_count(tmp_path, tracking_uri, capsys, monkeypatch):
    assert main(["run", *RUN, "--threads", "2", "--results", str(tmp_path / "results"), "--workdir",
                 str(tmp_path / "work"), "--tracking-uri", tracking_uri, "--no-progress", "--allow-dirty"]) == 0
    path = tmp_path / "results" / "records" / "tiny-synthetic" / "thread-sensitive-clip" / "seed0.json"
    assert json.loads(path.read_text())["environment"]["threads"] == 2
    counts = []
    train_and_probe = PairRunner.train_and_probe

    def counted(self, *args, **kwargs):
        counts.append(torch.get_num_threads())
        return train_and_probe(self, *args, **kwargs)

    monkeypatch.setattr(PairRunner, "train_and_probe", counted)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # this machine's own choice would be 1: the record's wins
    capsys.readouterr()
    assert reproduce(path, tmp_path / "work", tracking_uri) == 0
    out = capsys.readouterr().out
    assert counts == [2] and "threads: 2, the record's" in out

    older = json.loads(path.read_text())
    del older["environment"]["threads"]  # as every record made before records kept the count
    path.with_name("older.json").write_text(json.dumps(older))
    assert reproduce(path.with_name("older.json"), tmp_path / "work", tracking_uri) == 0
    out = capsys.readouterr().out
    assert counts[1:] == [1] and "threads: 1; the record does not say how many it trained with" in out


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_thread_count_that_is_not_a_positive_whole_number_is_one_line(value, tmp_path, capsys):
    assert main(["run", *RUN, "--threads", value, "--workdir", str(tmp_path / "w"), "--results",
                 str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads" in err[0] and not (tmp_path / "w").exists()
