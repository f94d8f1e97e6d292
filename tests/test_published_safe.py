"""Published records are written only when asked: every command defaults to runs/, and no command replaces a
record made under another identity unless --force, which keeps the old one in replaced/ beside the new."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main

# Two trained pairs, and one (clip on a single modality) recorded as n/a: every kind of record a run writes.
PAIRS = ("--method", "clip,untrained", "--task", "tiny-synthetic,single-modality")
QUICK = (*PAIRS, "--trials", "1", "--seeds", "2", "--epochs", "1")
PUBLISHED = Path("results")


def state(folder: Path) -> dict[str, tuple]:
    """Every file and folder under `folder`: its bytes' digest and modification time (a file rewritten with
    the same bytes counts as changed too)."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                                p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def published(tmp_path, tracking_uri, monkeypatch, capsys):
    """A working folder (the current one) holding results/ as users get one: records, history, figures and
    the leaderboard, made by a real `harness run --results results` and `harness leaderboard --results results`.
    Returns a function that runs `harness ...` there with the given arguments (the session's MLflow store,
    for speed; every records flag left to its default) and gives its exit code."""
    monkeypatch.chdir(tmp_path)

    def harness(*args: str) -> int:
        extra = ["--tracking-uri", tracking_uri, "--no-progress"] if args[0] in ("run", "diagnose", "reproduce") \
            else []
        return main([*args, *extra] + (["--allow-dirty"] if args[0] == "run" else []))

    assert harness("run", *QUICK, "--results", "results") == 0
    assert harness("leaderboard", "--results", "results") == 0
    assert (PUBLISHED / "records" / "tiny-synthetic" / "clip" / "seed1.json").is_file()
    assert (PUBLISHED / "records" / "single-modality" / "clip" / "not-applicable.json").is_file()
    assert (PUBLISHED / "LEADERBOARD.md").is_file()
    assert (PUBLISHED / "history" / "tiny-synthetic" / "clip.json").is_file()
    capsys.readouterr()
    return harness


def test_every_command_with_default_flags_leaves_the_published_folder_alone(published):
    before = state(PUBLISHED)
    # The user's quick runs, as in the report that asked for this: another identity (2 epochs), default folder.
    assert published("run", *PAIRS, "--trials", "1", "--seeds", "2", "--epochs", "2") == 0
    ours = Path("runs") / "records" / "tiny-synthetic" / "clip"
    assert json.loads((ours / "seed1.json").read_text())["identity"]["protocol"]["epochs"] == 2
    assert (Path("runs") / "records" / "single-modality" / "clip" / "not-applicable.json").is_file()
    assert published("run", *PAIRS, "--trials", "1", "--seeds", "2", "--epochs", "2") == 0  # nothing to train
    assert published("status") == 0
    shutil.rmtree("runs")  # so collect has something to write: the storage holds every settled seed
    assert published("collect") == 0
    assert json.loads((ours / "seed1.json").read_text())["identity"]["protocol"]["epochs"] == 2  # the newest
    assert published("leaderboard") == 0
    assert (Path("runs") / "LEADERBOARD.md").is_file()
    assert published("leaderboard", "--check") == 0
    assert published("diagnose", "--method", "raw-features", "--task", "tiny-synthetic") == 0
    assert (Path("runs") / "diagnostics" / "tiny-synthetic" / "raw-features.json").is_file()
    assert published("reproduce", str(PUBLISHED / "records" / "tiny-synthetic" / "clip" / "seed0.json")) == 0
    assert state(PUBLISHED) == before
    # Named explicitly, the published folder is written; a request its records already answer changes nothing,
    # the n/a record included.
    assert published("run", *QUICK, "--results", "results") == 0
    assert state(PUBLISHED) == before


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_replacing_published_records_of_another_identity_needs_force_and_keeps_them(published, capsys):
    before = state(PUBLISHED)
    pair = PUBLISHED / "records" / "tiny-synthetic" / "clip"
    old = {p.name: p.read_bytes() for p in pair.glob("*.json")}
    old_history = (PUBLISHED / "history" / "tiny-synthetic" / "clip.json").read_bytes()
    other = (*PAIRS, "--trials", "1", "--seeds", "2", "--epochs", "2", "--results", "results")
    assert published("run", *other) == 2
    err = one_line(capsys)
    assert f"tiny-synthetic/clip: 2 record(s) in {pair} were made under another identity" in err
    assert "recorded with 1 epochs, asked for 2" in err and "--force" in err and "--keep-old" in err
    assert state(PUBLISHED) == before
    assert published("run", *other, "--keep-old") == 0  # keeps them and trains nothing
    assert state(PUBLISHED) == before
    # The same quick records made elsewhere, then collected into the published folder from the storage.
    assert published("run", *PAIRS, "--trials", "1", "--seeds", "2", "--epochs", "2") == 0
    capsys.readouterr()
    assert published("collect", "--results", "results") == 2
    assert "were made under another identity" in one_line(capsys) and state(PUBLISHED) == before

    assert published("collect", "--results", "results", "--force") == 0
    assert {p.name: p.read_bytes() for p in pair.glob("*.json")} == {
        name: (Path("runs") / "records" / "tiny-synthetic" / "clip" / name).read_bytes() for name in old}
    kept = sorted((pair / "replaced").glob("*.json"))
    assert [p.name.split(".")[0] for p in kept] == ["seed0", "seed1"]
    assert {p.name.split(".")[0] + ".json": p.read_bytes() for p in kept} == old  # moved, byte for byte

    assert published("run", *other, "--force") == 0  # retrains over records of its own identity: kept too
    assert len(list((pair / "replaced").glob("seed0.*.json"))) == 2  # the earlier kept one is not overwritten
    assert sorted(json.loads(p.read_text())["identity"]["protocol"]["epochs"] for p in pair.glob("*.json")) == [2, 2]
    assert old_history in [p.read_bytes() for p in (PUBLISHED / "history" / "tiny-synthetic" / "replaced").glob("*")]


def test_the_leaderboards_advice_repairs_the_folder_it_read(published, capsys):
    from harness.results.records import Record, write_record

    seed1 = PUBLISHED / "records" / "tiny-synthetic" / "clip" / "seed1.json"
    record = json.loads(seed1.read_text())
    record["identity"]["protocol"]["epochs"] = 6
    write_record(PUBLISHED, Record(**record))  # a cell that mixes identities
    assert published("leaderboard", "--results", "results") == 2
    err = one_line(capsys)
    assert f"`harness run --method clip --task tiny-synthetic --results results --force` and those settings" in err
    # Followed with the settings of the seeds to keep, it repairs that folder, keeping the stale record aside.
    assert published("run", *QUICK, "--results", "results", "--force") == 0
    assert published("leaderboard", "--results", "results") == 0
    (stale,) = (seed1.parent / "replaced").glob("seed1.*.json")
    assert json.loads(stale.read_text())["identity"]["protocol"]["epochs"] == 6
