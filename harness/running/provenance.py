"""Where a method's or task's code came from: its distribution, version, git commit and a digest of its code.

A plugin's author may edit its loss and forget to bump its version; the records would then name a
version whose code they were not made with, and a rerun would reuse them. So the code itself is part
of a plugin's run identity (`code_digest`): the sha256 of every .py file of the top-level package that
defines the class (or of the one module file), read without importing it, so the command line's
no-torch path (harness/cli/resumed.py) computes what the runner does. The harness's own packages are
pinned by the versions their methods and tasks declare and by the harness commit every record names;
their identities carry no digest, so every published record stays valid through any edit of them.

Both are read once per process, like the harness's commit (harness.running.environment.git_commit):
the code a process runs is what it imported when it started, not what the files say an hour later.
This module imports no torch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness import __version__

# The top-level packages of the harness's own distribution (pyproject.toml's packages.find).
OWN_PACKAGES = frozenset({"harness", "methods", "tasks"})
PLUGIN_GROUPS = ("harness.methods", "harness.tasks")  # the entry-point groups of harness.api.catalog


def top_package(module: str) -> str:
    return module.split(".")[0]


def code_digest(module: str) -> str | None:
    """What a run identity names of the code defining a class in `module`: None for the harness's own
    packages, otherwise the digest of its top-level package's code."""
    top = top_package(module)
    return None if top in OWN_PACKAGES else _digest(top)


def describe(module: str) -> dict[str, Any]:
    """What a record says of the code defining a class in `module`: the distribution that installed it and
    its version (None when it was not installed, only found on the path), the commit of the git tree its
    files are tracked in and whether those files differ from it (None outside one), and its code digest."""
    top = top_package(module)
    distribution = _distribution(top)
    version = __version__ if top in OWN_PACKAGES else _version(distribution)
    commit, dirty = _git_state(top)
    return {"distribution": distribution, "version": version, "commit": commit, "dirty": dirty,
            "code": _digest(top)}


def _roots(top: str) -> list[Path]:
    """The package's folders (several for a namespace package), or its one module file: those it was loaded
    from, else those an import would load (found, not imported, so no torch). None found: no digest."""
    loaded = sys.modules.get(top)
    if loaded is not None:
        folders, origin = getattr(loaded, "__path__", None), getattr(loaded, "__file__", None)
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):  # ValueError: a module without a spec, like a script's __main__
            return []
        folders, origin = (spec.submodule_search_locations, spec.origin) if spec else (None, None)
    if folders:
        return [Path(p) for p in folders]
    return [Path(origin)] if origin and origin.endswith(".py") else []


def _files(root: Path) -> list[tuple[str, Path]]:
    """(name relative to the root, path) of every .py file, bytecode caches left out (none from a zip)."""
    if root.is_file():
        return [(root.name, root)]
    return [(path.relative_to(root).as_posix(), path) for path in root.rglob("*.py")
            if "__pycache__" not in path.parts and path.is_file()]


@functools.cache
def _digest(top: str) -> str | None:
    """sha256 over the sorted relative names and bytes of the package's .py files: any edit, rename, new or
    removed file changes it; where the package sits on disk does not."""
    files = sorted(item for root in _roots(top) for item in _files(root))
    if not files:
        return None
    digest = hashlib.sha256()
    for name, path in files:
        content = path.read_bytes()
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:16]


@functools.cache
def _distribution(top: str) -> str | None:
    """The distribution whose files hold the package, else the one whose harness entry point names it (a
    distribution that lists neither a RECORD nor a top_level.txt, like some editable installs)."""
    names = _installed().get(top) or [
        ep.dist.name for group in PLUGIN_GROUPS for ep in importlib.metadata.entry_points(group=group)
        if ep.dist is not None and top_package(ep.value.partition(":")[0]) == top]
    return sorted(names)[0] if names else None


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _version(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _git_state(top: str) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git tree tracking the package's files, or (None, None): no git, no repository,
    or a repository that does not track them (a virtual environment inside a project's checkout)."""
    states = [_git_state_of(root) for root in _roots(top)]
    commits = [commit for commit, _ in states if commit is not None]
    if not commits:
        return None, None
    return commits[0], any(dirty for _, dirty in states)


def _git_state_of(root: Path) -> tuple[str | None, bool]:
    folder, name = root.parent, root.name

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    tracked = git("ls-files", "--", name)
    commit = git("rev-parse", "--short=12", "HEAD")
    if not tracked or not commit:
        return None, False
    status = git("status", "--porcelain", "--untracked-files=all", "--", name) or ""
    # Bytecode the interpreter wrote beside the sources is no change to them (a fresh repository ignores nothing).
    changed = [line for line in status.splitlines() if "__pycache__/" not in line and not line.endswith(".pyc")]
    return commit.strip(), bool(changed)
