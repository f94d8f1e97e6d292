"""The metadata index: derived from the classes, cached, rebuilt when a source changes, read without torch."""

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.cli import index
from harness.running import workdir

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", METHODS.names())
def test_a_methods_entry_is_its_class_attributes(name):
    cls, info = METHODS.get(name), index.method_info(name)
    assert (info["name"], info["display_name"], info["version"], info["description"], info["trains"]) == (
        cls.name, cls.display_name, cls.version, cls.description, cls.trains)
    assert info["requirements"]["needs"] == cls.requirements.describe()
    assert info["requirements"]["min_modalities"] == cls.requirements.min_modalities
    assert sorted(info["search_space"]) == sorted(cls.search_space)
    for key, param in cls.search_space.items():
        assert info["search_space"][key]["type"] == type(param).__name__
    assert info["defaults"] == index._plain(cls.defaults)


@pytest.mark.parametrize("name", TASKS.names())
def test_a_tasks_entry_is_its_class_and_instance_attributes(name):
    cls = TASKS.get(name)
    task, info = cls(), index.task_info(name)
    assert (info["version"], info["suite"], info["label_kind"], info["num_classes"]) == (
        cls.version, cls.suite, cls.label_kind, task.num_classes)
    assert (info["default_epochs"], info["default_batch_size"]) == (cls.default_epochs, cls.default_batch_size)
    assert [m["name"] for m in info["modalities"]] == [m.name for m in task.modalities]
    assert [tuple(m["shape"]) for m in info["modalities"]] == [tuple(m.shape) for m in task.modalities]
    assert info["source"] == index._plain(dataclasses.asdict(task.source))
    assert info["offers_augmentations"] == cls.offers_augmentations()
    assert info["identity"] == index._plain(task.identity())
    assert index.data_present(info, None) == task.data_present()


def test_an_unknown_name_gets_the_registrys_suggestion():
    with pytest.raises(HarnessError, match="did you mean 'clip'"):
        index.method_info("clipp")


def test_a_changed_source_file_rebuilds_its_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(workdir.CACHE_ENV, str(tmp_path / "cache"))
    package = tmp_path / "indexprobe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "variant.py"
    source = textwrap.dedent('''
        from methods.untrained import Untrained

        class Variant(Untrained):
            name = "index-variant"
            display_name = "{display}"
    ''')
    module.write_text(source.format(display="First"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(index, "_loaded", {})
    METHODS.register("index-variant", "indexprobe.variant:Variant")
    try:
        assert index.method_info("index-variant")["display_name"] == "First"
        module.write_text(source.format(display="Second, a longer name"))  # another size: a new key
        # A new process would import the module afresh; here the module and class caches are dropped.
        monkeypatch.delitem(sys.modules, "indexprobe.variant")
        METHODS._loaded.pop("index-variant", None)
        assert index.method_info("index-variant")["display_name"] == "Second, a longer name"
    finally:
        METHODS._targets.pop("index-variant", None)
        METHODS._loaded.pop("index-variant", None)


@pytest.fixture(scope="module")
def indexed_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose index cache holds a fresh index (building it imports torch, once)."""
    env = {**os.environ, workdir.CACHE_ENV: str(tmp_path_factory.mktemp("index-cache"))}
    build = "from harness.cli import main; raise SystemExit(main(['list', 'methods']))"
    subprocess.run([sys.executable, "-c", build], cwd=ROOT, env=env, check=True, capture_output=True)
    return env


@pytest.mark.parametrize("argv", [["list", "methods"], ["list", "tasks"],
                                  ["leaderboard", "--results", "results", "--check"], ["--help"]],
                         ids=lambda argv: " ".join(argv))
def test_commands_that_do_no_training_import_no_torch(argv, indexed_env):
    check = (f"import sys\nfrom harness.cli import main\ntry:\n    code = main({argv!r})\n"
             "except SystemExit as stop:\n    code = stop.code\n"
             "heavy = sorted(m for m in ('torch', 'sklearn', 'mlflow', 'optuna') if m in sys.modules)\n"
             "assert code == 0 and not heavy, (code, heavy)\n")
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, env=indexed_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the command printed nothing"
