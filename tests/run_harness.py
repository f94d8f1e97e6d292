"""`python -m tests.run_harness run ...`: the harness command with the tests' tiny tasks and methods
registered, for tests that start real, separate `harness run` processes."""

import sys

from harness.api.catalog import METHODS, TASKS
from harness.cli import main
from harness.running import environment
from tests.fixtures import TEST_COMMIT, TEST_METHODS, TEST_TASKS

for _name, _target in TEST_TASKS.items():
    TASKS.register(_name, _target)
for _name, _target in TEST_METHODS.items():
    METHODS.register(_name, _target)

# As from a clean checkout, whatever state the developer's tree is in (see tests/conftest.py).
environment.git_commit = lambda: TEST_COMMIT

if __name__ == "__main__":
    sys.exit(main())
