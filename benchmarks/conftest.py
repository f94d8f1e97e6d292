"""Benchmarks share a 2-core CPU with other work. libgomp's worker threads spin while they
wait by default; when another process holds a core, a spinning torch thread burns the time
slice its partner needs, and a FactorCL epoch with two threads ran past 180 s instead of about
40 s. Passive waiting removes that. It must be set before torch is first imported; an
explicit OMP_WAIT_POLICY in the environment still wins.

Passive waiting costs every short parallel region a wake-up, so it is not what a user's command
sees: the benchmarks that time a user's run (`test_run_share.py`, `test_main_job_speed.py`) run that
command in a child process with the user's own setting (`user_environment`), where `harness` chooses."""

import os
import subprocess
from pathlib import Path

import pytest

# What the user's own environment says (None: unset), for the benchmarks that time a command as users run it.
USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
# main when issue 16 was filed (sklearn probe, eager critics, host syncs, eager imports): what the
# speed benchmarks that check it out beside this checkout (`before_checkout`) compare against.
BEFORE = "97be9c2"


@pytest.fixture(scope="module")
def before_checkout(tmp_path_factory):
    """A checkout of BEFORE in a scratch folder, removed afterwards."""
    path = tmp_path_factory.mktemp("before") / "checkout"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), BEFORE], cwd=ROOT, check=True,
                   capture_output=True)
    yield path
    subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False, capture_output=True)


def user_environment() -> dict[str, str]:
    """This process's environment with OMP_WAIT_POLICY as the user left it (unset unless they set it)."""
    env = dict(os.environ)
    if USER_WAIT_POLICY is None:
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = USER_WAIT_POLICY
    return env
