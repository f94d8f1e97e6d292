"""Optuna: storage, seeded TPE sampler, median pruner, and the trial budget."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from harness.errors import HarnessError, RunFailed
from harness.space import Choice, Float, Int, Param

SAMPLER_SEED = 0
optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def open_storage(spec: str | None, workdir: Path) -> optuna.storages.BaseStorage | str:
    """A journal file by default: safe for several local worker processes without a server."""
    if spec is None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(Path(workdir) / "optuna.journal")))
    if spec.endswith((".journal", ".log")):
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(spec))
    if "://" not in spec:
        raise HarnessError(
            f"--storage {spec}: give a journal file (name.journal), sqlite:///path.db or postgresql://..."
        )
    return spec


def open_study(name: str, storage) -> optuna.Study:
    try:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=SAMPLER_SEED),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
            load_if_exists=True,
        )
    except (ImportError, ValueError, RuntimeError) as exc:
        raise HarnessError(f"cannot open the Optuna study {name} ({exc}); check --storage") from None


def spent_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: finished, pruned or failed ones."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=done))


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, param in space.items():
        if isinstance(param, Float):
            values[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
        elif isinstance(param, Int):
            values[name] = trial.suggest_int(name, param.low, param.high, log=param.log)
        elif isinstance(param, Choice):
            values[name] = trial.suggest_categorical(name, list(param.options))
        else:
            raise TypeError(f"unsupported search-space entry {name}: {param!r}")
    return values


def best_params(study: optuna.Study, budget: int | None = None) -> dict[str, Any]:
    """The best completed trial among the study's first `budget` spent ones: a study that ran more
    trials for a larger budget gives a smaller budget exactly what it would have run itself."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    spent = sorted(study.get_trials(deepcopy=False, states=done), key=lambda t: t.number)[:budget]
    completed = [t for t in spent if t.state == TrialState.COMPLETE]
    if not completed:
        raise RunFailed(f"study {study.study_name}: no trial completed (all diverged or were pruned)")
    return dict(max(completed, key=lambda t: t.value).params)
