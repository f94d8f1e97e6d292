"""A test file collects the same cases alone as in the full run: no file's cases depend on what another file
registers when it is imported (test tasks are registered once, in tests/conftest.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Files parametrized over the task or method registry: the ones an import-time registration elsewhere would change.
REGISTRY_PARAMETRIZED = ("tests/test_smoke.py", "tests/test_registry.py")


def collected(*paths: str) -> list[str]:
    """Test ids `pytest --collect-only -q` lists for these paths, in a fresh process."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
                            cwd=ROOT, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)},
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.fixture(scope="module")
def full_run() -> list[str]:
    return collected("tests")


@pytest.mark.parametrize("path", REGISTRY_PARAMETRIZED)
def test_a_file_alone_collects_what_the_full_run_collects_for_it(path, full_run):
    in_full = [case for case in full_run if case.startswith(f"{path}::")]
    alone = collected(path)
    assert in_full and alone == in_full, (len(alone), len(in_full), sorted(set(in_full) ^ set(alone))[:10])
