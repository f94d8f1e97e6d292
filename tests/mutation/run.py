"""mutmut 3.8.1 over one module, in a scratch copy of the repository so the working tree is never touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from harness.api.errors import HarnessError
from tests.mutation.plan import Module

MUTMUT = "3.8.1"  # the equivalent lists name this version's mutants: another numbers them differently
INSTALL = 'pip install -e ".[mutation]"'


class MutmutFailed(RuntimeError):
    """mutmut gave no verdicts (the unmutated tests failed, say); its log stays in the scratch copy."""


def mutmut_command() -> str:
    """The mutmut executable beside this interpreter (or on PATH), checked to be the pinned version."""
    try:
        version = metadata.version("mutmut")
    except metadata.PackageNotFoundError:
        raise HarnessError(f"mutmut is not installed; install it with {INSTALL}") from None
    if version != MUTMUT:
        raise HarnessError(f"mutmut {version} is installed, but the plans name mutmut {MUTMUT}'s mutants; "
                           f"install it with {INSTALL}")
    beside = Path(sys.executable).parent / "mutmut"
    found = str(beside) if beside.is_file() else shutil.which("mutmut")
    if found is None:
        raise HarnessError(f"mutmut's command is not on PATH; install it with {INSTALL}")
    return found


def copy_tree(root: Path, scratch: Path) -> list[str]:
    """The files git tracks (and untracked ones it does not ignore), as they are in the working tree;
    returns the top-level names copied."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        raise HarnessError(f"{root} is not a git checkout; run the command from the repository's clone")
    tops = set()
    for name in filter(None, listed.stdout.split("\0")):
        source = root / name
        if source.is_file() and not source.is_symlink():  # a file deleted from the tree is still listed
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, scratch / name)
            tops.add(name.split("/")[0])
    return sorted(tops)


def configure(scratch: Path, module: Module, tops: list[str]) -> None:
    """[tool.mutmut] in the scratch pyproject.toml: mutate only the module, run only its tests.

    The module's top-level folder is mutmut's source path and everything else is copied beside it, so
    mutants/ is a whole copy of the repository and every import the tests make resolves inside it."""
    top = module.path.split("/")[0]
    settings = {
        "source_paths": [top],
        "only_mutate": [module.path],
        "also_copy": [t for t in tops if t != top],
        "pytest_add_cli_args_test_selection": list(module.tests),
        "use_git_change_detection": False,  # the scratch copy is no git checkout
    }
    pyproject = scratch / "pyproject.toml"
    kept = drop_table(pyproject.read_text() if pyproject.exists() else "", "tool.mutmut")
    # JSON's strings, lists and booleans (lower-cased) are TOML's.
    section = "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    pyproject.write_text(kept.rstrip("\n") + "\n\n[tool.mutmut]\n" + section + "\n")


def drop_table(text: str, name: str) -> str:
    """`text` without the TOML table [name] (a hand-run's leftover would make a second one)."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("["):
            inside = line.strip() == f"[{name}]"
        if not inside:
            kept.append(line)
    return "".join(kept)


def mutate(module: Module, root: Path, max_children: int, scratch: Path) -> dict[str, int | None]:
    """Run mutmut for `module` in `scratch`; mutant name -> its exit code (mutmut's verdict)."""
    command = mutmut_command()
    configure(scratch, module, copy_tree(root, scratch))
    # Subprocesses a test starts import the mutated copy too. The folder must exist before Python starts:
    # a path missing then is cached as holding nothing, and mutmut's own entry for it would find no module.
    (scratch / "mutants").mkdir()
    env = dict(os.environ, PYTHONPATH=str(scratch / "mutants"), MLFLOW_DISABLE_TELEMETRY="true")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny test tensors; a second thread only adds contention
    log = scratch / "mutmut.log"
    with log.open("w") as out:
        done = subprocess.run([command, "run", "--max-children", str(max_children)], cwd=scratch, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    meta = scratch / "mutants" / (module.path + ".meta")
    if done.returncode != 0 or not meta.is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise MutmutFailed(f"{tail}\nmutmut failed on {module.path} (exit code {done.returncode}); "
                           f"the last lines of its log ({log}) are above")
    return json.loads(meta.read_text())["exit_code_by_key"]


def diff(name: str, scratch: Path) -> str:
    """`mutmut show NAME`: the mutant's change to the source."""
    shown = subprocess.run([mutmut_command(), "show", name], cwd=scratch, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(scratch / "mutants")))
    return shown.stdout.strip() or shown.stderr.strip()


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mutation-"))
