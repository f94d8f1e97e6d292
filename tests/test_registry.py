from importlib.metadata import EntryPoint

import pytest

from harness.catalog import METHODS, TASKS
from harness.errors import HarnessError
from harness.registry import Registry


def test_builtin_entries_are_listed_without_importing_them():
    registry = Registry("method", {"lazy": "module_that_does_not_exist:Thing"}, "harness.none")
    assert registry.names() == ["lazy"]  # listing never imported the module


def test_unknown_name_suggests_the_closest_one():
    with pytest.raises(HarnessError, match="unknown method 'clp'; did you mean 'clip'"):
        METHODS.get("clp")


def test_unknown_name_without_a_close_match_points_to_the_listing():
    with pytest.raises(HarnessError, match="run `harness list tasks`"):
        TASKS.get("zzzzzz")


def test_entry_point_plugins_are_registered(monkeypatch):
    plugin = EntryPoint(name="plugin-clip", value="methods.clip:CLIP", group="harness.methods")
    monkeypatch.setattr("harness.registry.entry_points", lambda group: [plugin] if group == "g" else [])
    registry = Registry("method", {}, "g")
    assert "plugin-clip" in registry.names()
    # The class's own name is "clip", so the mismatch is reported rather than silently accepted.
    with pytest.raises(HarnessError, match="make the registry key and the class's name agree"):
        registry.get("plugin-clip")


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_its_identity(name):
    cls = METHODS.get(name)
    assert cls.name == name and cls.display_name and cls.version
    assert set(cls.search_space).isdisjoint({"seed", "epochs"})


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_declares_its_identity(name):
    task = TASKS.get(name)()
    assert task.name == name and task.modalities and task.num_classes >= 2
    assert len({m.name for m in task.modalities}) == len(task.modalities)
