from importlib.metadata import EntryPoint

import pytest

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.api.registry import Registry


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
    monkeypatch.setattr("harness.api.registry.entry_points", lambda group: [plugin] if group == "g" else [])
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


def test_a_name_registered_to_another_target_is_refused_naming_both():
    registry = Registry("method", {"clip": "methods.clip:CLIP"}, "harness.none")
    registry.register("clip", "methods.clip:CLIP")  # the same entry again is harmless
    with pytest.raises(HarnessError, match="method 'clip' is registered twice, to methods.clip:CLIP and to "
                                           "my_pkg.m:Other; rename one of them"):
        registry.register("clip", "my_pkg.m:Other")
    assert registry.get("clip").__name__ == "CLIP"


def test_a_plugin_under_a_builtin_name_is_refused_not_ignored(monkeypatch):
    plugin = EntryPoint(name="clip", value="my_pkg.m:Other", group="harness.methods")
    monkeypatch.setattr("harness.api.registry.entry_points", lambda group: [plugin])
    registry = Registry("method", {"clip": "methods.clip:CLIP"}, "harness.methods")
    for _ in range(2):  # on every use, not only the first
        with pytest.raises(HarnessError, match="registered twice, to methods.clip:CLIP and to my_pkg.m:Other"):
            registry.names()
