"""What a run keeps for its figures: the Optuna trial history and per-epoch curves of the scored seeds.

MLflow and the Optuna store are working stores and are not committed, so a run
also writes `RESULTS/history/TASK/METHOD.json`: the trials (number, state,
value, parameters) and, per retrained seed, its per-epoch metrics (training
losses and the quick validation probe). The figures are drawn from these
files alone, so anyone can regenerate and check them from a clone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.results.records import replace_atomically

HISTORY_DIR = "history"


def history_path(results: Path, task: str, method: str) -> Path:
    return Path(results) / HISTORY_DIR / task / f"{method}.json"


def read_history(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write_history(results: Path, task: str, method: str, display_name: str, study: str | None,
                  trials: list[dict[str, Any]], seeds: dict[int, list[dict[str, float]]]) -> Path:
    """Keep the seeds of an earlier call that this one did not rerun (a resumed pair retrains only some)."""
    path = history_path(results, task, method)
    earlier = read_history(path)["seeds"] if path.exists() else {}
    payload = {
        "task": task, "method": method, "display_name": display_name, "study": study, "trials": trials,
        "seeds": earlier | {str(seed): curve for seed, curve in seeds.items()},
    }
    replace_atomically(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return path


def all_histories(results: Path) -> list[dict[str, Any]]:
    return [read_history(p) for p in sorted((Path(results) / HISTORY_DIR).glob("*/*.json"))]
