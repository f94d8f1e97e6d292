"""Commands that do no training, against a bare `python -c "import torch"`, side by side.

`harness list` reads the metadata index (built first, outside the timing); `--help` and
`leaderboard --check` import no torch either. Run with
`python -m pytest benchmarks/test_startup_speed.py --benchmark-only`.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sidebyside import interleaved, record

ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 5
COMMANDS = {
    "list_methods": ["-m", "harness.cli", "list", "methods"],
    "list_tasks": ["-m", "harness.cli", "list", "tasks"],
    "help": ["-m", "harness.cli", "--help"],
    "leaderboard_check": ["-m", "harness.cli", "leaderboard", "--check"],
}


def python(args: list[str]):
    def run():
        subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
    return run


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_start_vs_import_torch(benchmark, command):
    python(COMMANDS[command])()  # builds the index if the sources changed since the last one
    medians = interleaved({command: python(COMMANDS[command]), "import_torch": python(["-c", "import torch"])},
                          ROUNDS)
    benchmark.pedantic(python(COMMANDS[command]), rounds=1, iterations=1)
    record(benchmark, medians, baseline="import_torch")
    assert medians[command] <= medians["import_torch"]


def test_a_run_its_records_answer_vs_import_torch(benchmark, tmp_path):
    """A rerun of the README's kind of command whose seeds are all recorded: it trains nothing."""
    run = ["-m", "harness.cli", "run", "--method", "untrained", "--task", "synthetic", "--seeds", "2",
           "--results", str(tmp_path / "results"), "--workdir", str(tmp_path / "work"), "--no-progress"]
    python([*run, "--allow-dirty"])()  # records both seeds, caches the fingerprint (and the index)
    medians = interleaved({"resumed_run": python(run), "import_torch": python(["-c", "import torch"])}, ROUNDS)
    benchmark.pedantic(python(run), rounds=1, iterations=1)
    record(benchmark, medians, baseline="import_torch")
    assert medians["resumed_run"] <= medians["import_torch"]
