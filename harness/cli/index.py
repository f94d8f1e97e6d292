"""Method and task metadata as plain dicts, readable without importing torch.

The index is derived, never written by hand: the first call after a source file
changes imports every registered method and task (torch included) and reads their
class attributes; the result is cached as JSON keyed by the size and modification
time of every source file of the packages that hold the entries (and the versions
of plugin distributions). Every later call reads the JSON: `harness list` and any
command that only needs names, versions, defaults or requirements start without
torch, scikit-learn or MLflow.

    from harness.cli import index
    index.method_names()            # sorted registry names, plugins included
    index.method_info("clip")       # name, display_name, version, description, trains,
                                    # requirements (fields + "needs" text), search_space, defaults,
                                    # domains (search_space and domains as harness.api.space.to_entry),
                                    # target, module (the class's, which names its code in a run identity)
    index.task_info("synthetic")    # name, version, suite, description, label_kind, num_classes,
                                    # modalities, source, offers_augmentations, default_epochs,
                                    # default_batch_size, params, identity, extra_symbols, target, module
    index.data_present(index.task_info("mimic"), data_dir)

An unknown name raises HarnessError with the registry's "did you mean" message.
The cache lives in $HARNESS_CACHE_DIR, else ~/.cache/contrastive-harness; an
unwritable cache only costs the rebuild.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from harness.api.catalog import METHODS, TASKS
from harness.api.registry import Registry
from harness.api.space import to_entry
from harness.running.workdir import cache_dir

log = logging.getLogger(__name__)
FORMAT = 3  # bump when the entries' layout changes


def method_names() -> list[str]:
    return METHODS.names()


def task_names() -> list[str]:
    return TASKS.names()


def method_info(name: str) -> dict[str, Any]:
    return _entry(METHODS, "methods", name)


def task_info(name: str) -> dict[str, Any]:
    return _entry(TASKS, "tasks", name)


def data_present(task: dict[str, Any], data_dir: Path | None) -> bool:
    """Task.data_present, from a task's entry: generated data is always there; files need a folder.

    Which files a task reads may depend on what the folder holds (IRFL takes either public layout),
    so with a folder to look in the task itself decides; only then is its module imported."""
    if task["source"]["kind"] != "files":
        return True
    if data_dir is None:
        return False
    from harness.api.catalog import TASKS

    return TASKS.get(task["name"])(data_dir=Path(data_dir)).data_present()


def _entry(registry: Registry, section: str, name: str) -> dict[str, Any]:
    registry.require(name)
    return _index()[section][name]


_loaded: dict[str, Any] = {}


def _index() -> dict[str, Any]:
    key = _source_key()
    if _loaded.get("key") == key:
        return _loaded["index"]
    path = cache_dir() / f"index-{key}.json"
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        index = _build()
        _write(path, index)
    _loaded.update(key=key, index=index)
    return index


def _build() -> dict[str, Any]:
    log.info("indexing methods and tasks (once after their source changes)")
    return {
        "methods": {name: _describe_method(name, METHODS.get(name), METHODS) for name in METHODS.names()},
        "tasks": {name: _describe_task(name, TASKS.get(name), TASKS) for name in TASKS.names()},
    }


def _describe_method(name: str, cls: type, registry: Registry) -> dict[str, Any]:
    requirements = cls.requirements
    return _plain({
        "name": name, "display_name": cls.display_name, "version": cls.version, "description": cls.description,
        "trains": cls.trains, "target": registry.target(name), "module": cls.__module__,
        "requirements": {**dataclasses.asdict(requirements), "needs": requirements.describe()},
        "search_space": {key: to_entry(p) for key, p in cls.search_space.items()},
        "defaults": dict(cls.defaults), "domains": {key: to_entry(d) for key, d in cls.domains.items()},
    })


def _describe_task(name: str, cls: type, registry: Registry) -> dict[str, Any]:
    task = cls()
    return _plain({
        "name": name, "version": cls.version, "suite": cls.suite, "description": cls.description,
        "label_kind": cls.label_kind, "num_classes": task.num_classes, "target": registry.target(name),
        "module": cls.__module__,
        "modalities": [dataclasses.asdict(m) for m in task.modalities],
        "source": dataclasses.asdict(task.source), "offers_augmentations": cls.offers_augmentations(),
        "default_epochs": cls.default_epochs, "default_batch_size": cls.default_batch_size,
        "params": task.params, "identity": task.identity(), "extra_symbols": dict(cls.extra_symbols),
        "inputs_of": cls.inputs_of,
    })


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples and sets as lists, dataclasses as dicts), as the cache will return it."""
    def convert(item: Any) -> Any:
        if dataclasses.is_dataclass(item):
            return dataclasses.asdict(item)
        if isinstance(item, (set, frozenset)):
            return sorted(item)
        raise TypeError(f"{type(item).__name__} is not plain metadata")

    return json.loads(json.dumps(value, default=convert))


def _source_key() -> str:
    """Changes whenever a source file that could change an entry does, or a plugin's version."""
    digest = hashlib.sha256(f"{FORMAT}".encode())
    targets = sorted(f"{name}={target}" for r in (METHODS, TASKS) for name, target in r.targets().items())
    digest.update("\n".join(targets).encode())
    packages = {"harness"} | {_top_package(t) for r in (METHODS, TASKS) for t in r.targets().values()}
    for package in sorted(packages):
        spec = importlib.util.find_spec(package)
        roots = list(spec.submodule_search_locations or []) if spec else []
        if spec and not roots and spec.origin:
            roots = [spec.origin]
        for root in roots:
            for path in sorted(_python_files(Path(root))):
                stat = path.stat()
                digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for group in ("harness.methods", "harness.tasks"):
        for ep in entry_points(group=group):
            version = ep.dist.version if ep.dist is not None else "?"
            digest.update(f"{group}:{ep.name}={ep.value}@{version}\n".encode())
    return digest.hexdigest()[:16]


def _top_package(target: str) -> str:
    return target.partition(":")[0].split(".")[0]


def _python_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]


def _write(path: Path, index: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("index cache not written (%s); it is rebuilt next time", exc)
