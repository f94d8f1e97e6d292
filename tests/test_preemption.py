"""A preempted seed (SIGTERM or SIGUSR1: the step ends, the state is kept, the command exits 75) resumed by
the rerun records what an uninterrupted run records, bit for bit: metrics and trained weights. Here the stop
comes at a chosen step (the checkpoint's test hook raises the flag a signal raises), in one process; the
real signals, workers and ranks are in tests/test_preemption_processes.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from harness.cli.app import main
from harness.running import preemption
from harness.running.checkpoint import FOLDER, STOP_AT_ENV
from harness.running.saved_encoders import encoder_path

# Two epochs of tiny-synthetic's 300 training rows in batches of 64: 5 steps an epoch, so step 3 is mid-epoch
# and step 5 the end of the first.
EPOCHS = ("--trials", "1", "--seeds", "1", "--epochs", "2")


def run(where: Path, method: str, *extra: str) -> int:
    return main(["run", "--method", method, "--task", "tiny-synthetic", *EPOCHS, *extra,
                 "--results", str(where / "results"), "--workdir", str(where / "work"), "--no-progress",
                 "--allow-dirty"])


def answer(where: Path, method: str, seed: int = 0) -> tuple[dict, str]:
    """The seed's recorded metrics and a digest of the weights it saved (what its probe scored)."""
    record = json.loads((where / "results" / "records" / "tiny-synthetic" / method / f"seed{seed}.json").read_text())
    state = torch.load(encoder_path(where / "work", record["identity"], seed), weights_only=True)["state"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].contiguous().numpy().tobytes())
    return record["metrics"], digest.hexdigest()


def checkpoints(where: Path) -> list[Path]:
    return sorted((where / "work" / FOLDER).rglob("*.pt"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each method's answer from one run that nothing stopped."""
    answers = {}

    def of(method: str):
        if method not in answers:
            where = tmp_path_factory.mktemp(f"uninterrupted-{method}")
            stops = os.environ.pop(STOP_AT_ENV, None)  # a test's stops are set while this runs
            try:
                assert run(where, method) == 0
            finally:
                if stops is not None:
                    os.environ[STOP_AT_ENV] = stops
            answers[method] = answer(where, method)
        return answers[method]

    return of


@pytest.mark.parametrize("method", ["simclr", "clip", "factorcl-sup"])
def test_a_seed_preempted_mid_epoch_resumes_to_the_uninterrupted_record(method, tmp_path, monkeypatch, capsys,
                                                                       uninterrupted):
    monkeypatch.setenv(STOP_AT_ENV, "3")
    capsys.readouterr()
    assert run(tmp_path, method) == preemption.EXIT_CODE
    err = capsys.readouterr().err.strip().splitlines()
    kept = checkpoints(tmp_path)
    assert len(kept) == 1 and str(kept[0]) in err[-1] and "run the same command again" in err[-1]
    assert not (tmp_path / "results" / "records" / "tiny-synthetic" / method / "seed0.json").exists()
    assert run(tmp_path, method) == 0
    assert answer(tmp_path, method) == uninterrupted(method)
    assert checkpoints(tmp_path) == []  # removed once the record is written


def test_three_preemptions_of_one_seed_finish_with_the_uninterrupted_record(tmp_path, monkeypatch, uninterrupted):
    """Mid-epoch, at an epoch's last step, and mid-epoch again: each rerun goes on from the last."""
    monkeypatch.setenv(STOP_AT_ENV, "2,5,8")
    for _ in range(3):
        assert run(tmp_path, "clip") == preemption.EXIT_CODE
        assert len(checkpoints(tmp_path)) == 1
    assert run(tmp_path, "clip") == 0
    assert answer(tmp_path, "clip") == uninterrupted("clip")
    assert checkpoints(tmp_path) == []


def test_a_checkpoint_of_another_identity_is_ignored_with_a_warning(tmp_path, monkeypatch, caplog, uninterrupted):
    monkeypatch.setenv(STOP_AT_ENV, "3")
    assert run(tmp_path, "clip", "--set", "embed_dim=16") == preemption.EXIT_CODE
    (kept,) = checkpoints(tmp_path)
    # The same file name, but written under another identity (as a digest's collision would be).
    monkeypatch.delenv(STOP_AT_ENV)
    payload = torch.load(kept, weights_only=True)
    payload["key"]["identity"]["protocol"]["epochs"] = 99
    torch.save(payload, kept)
    caplog.clear()
    assert run(tmp_path, "clip", "--set", "embed_dim=16") == 0
    assert any("written for another identity" in r.getMessage() for r in caplog.records)
    assert checkpoints(tmp_path) == []


def test_a_preempted_trial_is_given_back_and_the_rerun_records_the_same(tmp_path, uninterrupted):
    """A signal while a trial trains: the trial stops and is retried, the answer is unchanged."""
    preemption.clear()
    original = preemption.requested
    steps = {"n": 0}

    def after_two_checks() -> bool:  # the third look at the flag (the sweep's, then the trial's steps) stops
        steps["n"] += 1
        return steps["n"] == 3 or original()

    preemption.requested = after_two_checks
    try:
        assert run(tmp_path, "clip") == preemption.EXIT_CODE
    finally:
        preemption.requested = original
    assert checkpoints(tmp_path) == []  # a trial keeps no state: it runs again from its start
    assert run(tmp_path, "clip") == 0
    assert answer(tmp_path, "clip") == uninterrupted("clip")
