import os
import tempfile
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# Test tensors are tiny: a second torch thread only adds synchronization, and on a CPU shared with
# other work its spinning threads cost many times over (the suite ran 4x slower with two threads).
# Set before torch is first imported; an explicit OMP_NUM_THREADS still wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The metadata index the tests build stays out of the user's cache (keyed by source, so it is safe to share).
os.environ.setdefault("HARNESS_CACHE_DIR", str(Path(tempfile.gettempdir()) / "harness-test-index"))

# tests/mutation/ is the mutation-score command (`python -m tests.mutation`), not tests: the default run
# never starts mutmut. Its own logic is tested in tests/test_mutation_command.py.
collect_ignore = ["mutation"]

from harness.api.catalog import METHODS, TASKS  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.running import environment  # noqa: E402
from tests.fixtures import TEST_COMMIT, TEST_IMAGE_TASKS, TEST_METHODS, TEST_TASKS  # noqa: E402

for _name, _target in (TEST_TASKS | TEST_IMAGE_TASKS).items():
    TASKS.register(_name, _target)
for _name, _target in TEST_METHODS.items():
    METHODS.register(_name, _target)


@pytest.fixture(autouse=True)
def committed_code(monkeypatch):
    """Tests run the harness as from a clean checkout, whatever state the developer's tree is in;
    the test of the dirty-tree refusal sets its own commit."""
    monkeypatch.setattr(environment, "git_commit", lambda: TEST_COMMIT)


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the session: creating a store costs seconds, runs do not."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def harness_run(tmp_path: Path, tracking_uri: str):
    """Call `harness run` in-process with throwaway stores; returns (exit code, results dir)."""
    results = tmp_path / "results"

    def run(*args: str) -> int:
        return main(["run", *args, "--results", str(results), "--workdir", str(tmp_path / "work"),
                     "--tracking-uri", tracking_uri, "--no-progress", "--allow-dirty"])

    run.results = results
    run.workdir = tmp_path / "work"
    return run
