"""The dependency direction of harness/, read from the source with `ast`: a layer imports only the layers
below it, and no modules import each other in a circle (lazy imports inside functions count too: they
are still a dependency, only a later one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
# Lowest first. The interface knows nothing else; results never import running; the command line is on top.
LAYERS = ["api", "results", "running", "cli"]
# The pre-0.2 module paths plugins may still import: each re-exports one interface module.
COMPAT = {"harness.method", "harness.task", "harness.space", "harness.registry", "harness.errors",
          "harness.catalog"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def harness_imports(path: Path) -> set[str]:
    """Every harness module that `path` imports, at module level or inside a function."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            # `from harness.x import y` may name a submodule y or a name inside x: keep the longer if it exists
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _exists(candidate) else base)
    return {name for name in found if name == "harness" or name.startswith("harness.")}


def _exists(module: str) -> bool:
    path = ROOT / module.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


MODULES = {module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}
GRAPH = {name: harness_imports(path) - {name} for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer_of(m) is not None))
def test_a_layer_imports_only_the_layers_below_it(module):
    own = layer_of(module)
    upward = sorted(i for i in GRAPH[module] if (layer_of(i) or 0) > own or i in COMPAT)
    assert not upward, f"{module} (layer {LAYERS[own]}) imports {upward}, above it or through an old path"


def test_the_old_paths_only_re_export_the_interface():
    for module in COMPAT:
        targets = GRAPH[module]
        assert targets and all(layer_of(t) == 0 for t in targets), (module, targets)


def test_no_modules_import_each_other_in_a_circle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target not in GRAPH or target in (module.rpartition(".")[0], "harness"):
                continue  # a package's own __init__ (loaded first anyway) and the version are no cycle
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_methods_and_tasks_build_on_the_interface_not_on_results_or_the_command_line():
    for path in sorted([*(ROOT / "methods").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]):
        wrong = sorted(i for i in harness_imports(path) if layer_of(i) in (1, 3) or i in COMPAT)
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_the_test_sees_the_imports_it_checks():
    # Guards the reader itself: a known upward edge in a synthetic module is found.
    assert "harness.running.train" in GRAPH["harness.running.pair_training"]
    assert "harness.api.method" in GRAPH["harness.running.train"]
