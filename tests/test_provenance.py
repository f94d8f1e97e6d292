"""A plugin's code is part of its run identity: an edit made without a new version is never answered with the
records of the code before it, and every record says which distribution, version and commit its code came from.
The harness's own methods and tasks add nothing to an identity, so the published records keep theirs."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.api.catalog import METHODS, TASKS
from harness.results.identity import differences, run_identity
from harness.results.records import read_records
from harness.running import provenance

ROOT = Path(__file__).resolve().parents[1]

METHOD = '''
import torch.nn.functional as F

from harness.api.method import Method
from harness.api.space import Float
from methods.common.encoders import ModalityEncoders


class XvicAlign(Method):
    name = "xvic-align"
    display_name = "Xvic align"
    version = "1.0"
    search_space = {"margin": Float(0.05, 0.5)}
    defaults = {"margin": 0.2, "embed_dim": 16}

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoders = ModalityEncoders(task, hparams["embed_dim"])

    def loss(self, batch):
        a, b = self.encoders(batch.inputs).values()
        return F.relu(self.hparams["margin"] - F.cosine_similarity(a, b)).mean()

    def encode(self, inputs):
        return self.encoders.joint(inputs)
'''

TASK = '''
from dataclasses import replace

from tasks.synthetic import Synthetic


class XvicTiny(Synthetic):
    name = "xvic-tiny"
    default_epochs = 1
    default_batch_size = 64
    setting = replace(Synthetic.setting, n_train_test=400, n_val=100, input_dim=20)
'''


def install(site: Path) -> Path:
    """What `pip install` leaves for a package with a method and a task entry point; returns its folder."""
    package = site / "xvic"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "method.py").write_text(textwrap.dedent(METHOD))
    (package / "task.py").write_text(textwrap.dedent(TASK))
    info = site / "xvic-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xvic\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[harness.methods]\nxvic-align = xvic.method:XvicAlign\n\n"
                                           "[harness.tasks]\nxvic-tiny = xvic.task:XvicTiny\n")
    return package


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


# `harness run`, and after it whether torch was imported: only the no-torch path answers without it.
RUN = ("import sys\nfrom harness.cli import main\ncode = main(sys.argv[1:])\n"
       "print('torch imported:', 'torch' in sys.modules)\nraise SystemExit(code)\n")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_installed_plugin_edited_without_a_new_version_is_not_answered_by_its_old_records(tmp_path):
    site = tmp_path / "site"
    package = install(site)
    git(site, "init", "-q")
    git(site, "add", ".")
    git(site, "commit", "-q", "-m", "xvic 1.0")
    commit = git(site, "rev-parse", "--short=12", "HEAD")
    results = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]),
               HARNESS_CACHE_DIR=str(tmp_path / "cache"))

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", RUN, "run", "--method", "xvic-align", "--task", "xvic-tiny", "--trials", "1",
             "--seeds", "1", "--epochs", "1", "--no-progress", "--allow-dirty", "--results", str(results),
             "--workdir", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    def record() -> dict:
        return json.loads((results / "records" / "xvic-tiny" / "xvic-align" / "seed0.json").read_text())

    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    trained = record()
    code = trained["identity"]["method"]["code"]
    assert trained["identity"]["task"]["code"] == code  # one package holds both: one digest of its code
    assert trained["method"]["provenance"] == {"distribution": "xvic", "version": "1.0", "commit": commit,
                                               "dirty": False, "code": code}
    assert trained["task"]["provenance"] == trained["method"]["provenance"]

    again = run()  # unchanged: the records stand, and the no-torch path computes the identity the runner did
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to train" in again.stderr and "torch imported: False" in again.stdout

    method = package / "method.py"
    method.write_text(method.read_text().replace("cosine_similarity(a, b)).mean()", "cosine_similarity(a, b)).sum()"))
    edited = run()
    assert "nothing to train" not in edited.stderr
    said = [line for line in edited.stderr.splitlines() if "method code" in line]
    assert len(said) == 1 and f"recorded with method code {code}, asked for method code " in said[0], edited.stderr
    assert "its code changed, its version did not: bump the version" in said[0]
    if edited.returncode == 0:  # retrained and replaced
        retrained = record()
        assert retrained["identity"]["method"]["code"] not in (None, code)
        assert retrained["method"]["provenance"]["dirty"] is True
        assert retrained["method"]["provenance"]["commit"] == commit
    else:  # or refused, in one line, until the user says what to do with the old records
        assert edited.returncode == 2 and said[0].startswith("error:"), edited.stderr[-3000:]
        assert record() == trained


def test_the_code_digest_reads_every_python_file_of_the_package_and_nothing_else(tmp_path, monkeypatch):
    package = tmp_path / "provprobe_a"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "loss.py").write_text("SCALE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = provenance.code_digest("provprobe_a.sub.loss")
    assert before is not None and provenance.code_digest("provprobe_a") == before  # the top-level package's
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "loss.cpython-311.pyc").write_bytes(b"compiled")
    (package / "notes.txt").write_text("not code")
    provenance._digest.cache_clear()  # read once per process; a new process would read the files again
    assert provenance.code_digest("provprobe_a.sub.loss") == before
    (package / "sub" / "loss.py").write_text("SCALE = 2\n")
    provenance._digest.cache_clear()
    assert provenance.code_digest("provprobe_a.sub.loss") != before


def test_code_outside_a_git_tree_and_outside_any_distribution_says_so(tmp_path, monkeypatch):
    (tmp_path / "provprobe_b.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    if git_tree_above(tmp_path):
        pytest.skip("the temporary folder lies inside a git tree")
    found = provenance.describe("provprobe_b")
    assert found == {"distribution": None, "version": None, "commit": None, "dirty": None,
                     "code": provenance.code_digest("provprobe_b")}
    assert found["code"] is not None


def git_tree_above(folder: Path) -> bool:
    return subprocess.run(["git", "-C", str(folder), "rev-parse"], capture_output=True).returncode == 0


def test_the_harness_own_code_adds_nothing_to_an_identity_but_its_records_say_where_it_came_from():
    assert METHODS.get("clip").__module__.split(".")[0] in provenance.OWN_PACKAGES
    assert provenance.code_digest(METHODS.get("clip").__module__) is None
    assert provenance.code_digest(TASKS.get("synthetic").__module__) is None
    from harness import __version__

    described = provenance.describe(METHODS.get("clip").__module__)
    assert described["version"] == __version__ and described["code"] is not None


def test_every_published_record_keeps_the_identity_a_request_builds_for_it():
    checked = 0
    for record in read_records(ROOT / "results"):
        identity = record.identity
        task, method = identity["task"]["name"], identity["method"]["name"]
        if task not in TASKS or method not in METHODS:
            continue
        rebuilt = run_identity(
            identity["task"] | {"code": provenance.code_digest(TASKS.get(task).__module__)},
            identity["method"] | {"code": provenance.code_digest(METHODS.get(method).__module__)},
            identity["protocol"], identity["fixed"])
        assert rebuilt == identity and not differences(identity, rebuilt), (task, method, record.seed)
        checked += 1
    assert checked > 0


def test_a_code_difference_says_what_changed_and_what_to_do():
    task = {"name": "t", "version": "1", "params": {}, "fingerprint": "f"}
    protocol = {"epochs": 1, "trials": 1, "seeds": 1, "batch_size": 8}
    old = run_identity(task, {"name": "m", "version": "1.0", "code": "aaaa"}, protocol, {})
    new = run_identity(task, {"name": "m", "version": "1.0", "code": "bbbb"}, protocol, {})
    assert [str(d) for d in differences(old, new)] == [
        "recorded with method code aaaa, asked for method code bbbb (its code changed, its version did not: bump "
        "the version when an edit changes results)"]
    bumped = run_identity(task, {"name": "m", "version": "1.1", "code": "bbbb"}, protocol, {})
    assert [str(d) for d in differences(old, bumped)] == [
        "recorded with method version 1.0, asked for method version 1.1",
        "recorded with method code aaaa, asked for method code bbbb"]
    before = {**old, "method": {"name": "m", "version": "1.0"}}  # made before code digests were recorded
    assert "it was made before a plugin's code was part of its identity" in str(differences(before, new)[0])
    assert "code" not in run_identity(task, {"name": "m", "version": "1.0", "code": None}, protocol, {})["method"]


def test_reproduce_refuses_a_record_whose_plugin_code_was_edited_since():
    from harness.cli.reproduce import mismatches
    from harness.results.records import Record
    from harness.running.pair import Pair

    task_cls, method_cls = TASKS.get("tiny-synthetic"), METHODS.get("clip")  # a test task: outside the harness
    code = provenance.code_digest(task_cls.__module__)
    task = task_cls()
    identity = run_identity(task.identity() | {"code": code}, {"name": "clip", "version": method_cls.version},
                            {}, {})
    record = Record(task=plain_copy(task.identity()), method={"name": "clip", "version": method_cls.version}, seed=0,
                    status="ok", identity=plain_copy(identity), environment={"git_commit": "0123456789ab"})
    assert mismatches(record, Pair(task, method_cls)) == []
    record.identity["task"]["code"] = "0000000000000000"
    assert mismatches(record, Pair(task, method_cls)) == [
        f"task tiny-synthetic's code is not the record's (code {code} here, 0000000000000000 in the record)"]


def plain_copy(value: dict) -> dict:
    return json.loads(json.dumps(value))


def test_the_own_packages_are_those_the_harness_distribution_ships():
    import tomllib

    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in shipped} == provenance.OWN_PACKAGES
