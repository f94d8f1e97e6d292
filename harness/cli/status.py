"""`harness status`: where a sweep stands, per (task, method), read from its shared storage and the records.

Safe beside running workers on any machine that reaches the storage: it takes no lock and writes nothing.
What it prints is a snapshot: the workers may have moved on by the time it is read.
"""

from __future__ import annotations

from pathlib import Path

from harness.api.errors import HarnessError
from harness.results.records import record_path
from harness.running.sweep_state import SweepState, sweep_states
from harness.running.tuning import open_storage


def status_command(storage_spec: str | None, workdir: Path, results: Path) -> int:
    _refuse_missing(storage_spec, workdir)
    states = sweep_states(open_storage(storage_spec, workdir, reading=True))
    if not states:
        print(f"no sweep in {storage_spec or Path(workdir) / 'optuna.journal'} yet")
        return 0
    print("\n\n".join(describe(state, results) for state in states))
    return 0


def describe(state: SweepState, results: Path) -> str:
    """A pair's lines: its definition, its trials and seeds, who holds what, and what is left."""
    task, method = state.pair
    sweep = state.definition
    if sweep:
        fixed = ", ".join(f"{k}={v}" for k, v in sorted((sweep.get("fixed") or {}).items()))
        head = (f"{task}/{method}: {sweep['trials']} trials, {sweep['seeds']} seeds, {sweep['epochs']} epochs; "
                f"fixed {fixed or 'nothing'}; {state.members} worker(s) on it")
    else:
        head = f"{task}/{method}: definition not stored (a study made before `harness status`)"
    left = f"{state.trials_left} to start" if state.trials_left is not None else "budget unknown"
    lines = [head, f"  study    {state.study}",
             f"  trials   {state.done} done, {state.running} running, {state.failed} failed, {state.retried} retried; "
             f"{left}" + (f" ({state.waiting} of them a queued retry)" if state.waiting else "")]
    failed = "".join(f"; seed {seed} failed: {why}" for seed, why in sorted(state.seeds_failed.items()))
    seeds_left = f"{state.seeds_left} to start" if state.seeds_left is not None else "seeds unknown"
    recorded = ""
    if sweep:
        found = sum(record_path(results, task, method, s).exists() for s in range(sweep["seeds"]))
        recorded = f"; {found} of {sweep['seeds']} records in {results}"
    lines.append(f"  seeds    {_seeds(state.seeds_ok)} settled, {_seeds(state.seeds_running)} running, "
                 f"{len(state.seeds_failed)} failed; {seeds_left}{recorded}{failed}")
    lines += [f"  held     {holding.describe()}" for holding in state.held]
    return "\n".join(lines)


def _seeds(seeds: list[int]) -> str:
    return f"{len(seeds)} ({', '.join(map(str, sorted(seeds)))})" if seeds else "0"


def _refuse_missing(storage_spec: str | None, workdir: Path) -> None:
    """Opening a file store creates it; a status of a path that holds no sweep is a mistyped path."""
    if storage_spec is None:
        path = Path(workdir) / "optuna.journal"
    elif storage_spec.startswith("sqlite:///"):
        path = Path(storage_spec.removeprefix("sqlite:///"))
    elif "://" not in storage_spec:
        path = Path(storage_spec)
    else:
        return  # a server: opening it says whether it answers
    if not path.is_file():
        raise HarnessError(f"no Optuna storage at {path}; give the --storage and --workdir the sweep runs with")
