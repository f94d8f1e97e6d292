"""Optuna: storage, seeded TPE sampler, median pruner, and the trial budget."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from harness.api.errors import HarnessError, RunFailed
from harness.api.space import Choice, Float, Int, Param
from harness.running.coordination import counts_against_budget, mutex_for, slot_of

SAMPLER_SEED = 0
optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def _without_traceback(record: logging.LogRecord) -> bool:
    """Optuna logs a trial's error with its traceback, then re-raises it. The harness reports what reaches
    it in one line (an out-of-memory pair, a bad input) and Python prints a defect's traceback once, so
    Optuna's copy only buries that line."""
    record.exc_info, record.exc_text = None, None
    return True


# The logger Optuna reports failed trials on; a test fails if a traceback gets through again.
logging.getLogger("optuna.study._optimize").addFilter(_without_traceback)


def open_storage(spec: str | None, workdir: Path, *, reading: bool = False) -> optuna.storages.BaseStorage:
    """A journal file by default: safe for several local worker processes without a server.
    A database's tables are created (or migrated) inside the workers' mutex: once, whoever comes first.
    `reading` (`harness status`): a database is opened as it is, creating nothing and taking no mutex, so a
    reader never waits on the workers."""
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
    if reading:
        return _database(spec, reading=True)
    if spec.startswith("sqlite:///"):
        Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with mutex_for(spec, workdir).hold():
        return _database(spec)


def _database(url: str, reading: bool = False) -> optuna.storages.RDBStorage:
    """Connect now, so a server that is down or a bad URL fails in one line before any work."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise HarnessError(f"--storage {url}: not a database URL; write sqlite:///path.db or "
                           f"postgresql://user:password@host:port/database") from None
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # the driver we install, on any SQLAlchemy
    try:
        return optuna.storages.RDBStorage(parsed.render_as_string(hide_password=False), skip_table_creation=reading)
    except (ImportError, ValueError, RuntimeError, sqlalchemy.exc.SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise HarnessError(f"--storage {shown}: cannot open the database ({reason}); start its server, "
                           f"or fix the URL") from None


def open_study(name: str, storage) -> optuna.Study:
    try:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=sampler_for(0),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
            load_if_exists=True,
        )
    except (ImportError, ValueError, RuntimeError) as exc:
        raise HarnessError(f"cannot open the Optuna study {name} ({exc}); check --storage") from None


def sampler_for(slot: int) -> optuna.samplers.BaseSampler:
    """TPE seeded by the trial's budget slot (harness.running.coordination): workers sharing a study never
    draw the same parameters (each process's sampler would start from one seed), one process stays
    reproducible, and a trial retried after its worker died draws what the lost attempt drew."""
    return optuna.samplers.TPESampler(seed=SAMPLER_SEED + slot)


def spent_trials(study: optuna.Study) -> int:
    """Trials that count against the budget: finished, pruned or failed ones, not those given back."""
    return sum(1 for trial in study.get_trials(deepcopy=False) if counts_against_budget(trial))


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


def budget_trials(study: optuna.Study, budget: int | None = None) -> list:
    """The trials a budget of `budget` counts, in slot order: the first `budget` spent ones. A study that ran
    more trials for a larger budget gives a smaller budget exactly what it would have run itself, and an
    attempt given back after its worker died is not among them (its retry, in the same slot, is)."""
    return sorted((t for t in study.get_trials(deepcopy=False) if counts_against_budget(t)),
                  key=lambda t: (slot_of(t), t.number))[:budget]


def best_params(study: optuna.Study, budget: int | None = None) -> dict[str, Any]:
    """The best completed trial among those the budget counts (`budget_trials`)."""
    completed = [t for t in budget_trials(study, budget) if t.state == TrialState.COMPLETE]
    if not completed:
        raise RunFailed(f"study {study.study_name}: no trial completed (all diverged or were pruned)")
    return dict(max(completed, key=lambda t: t.value).params)


def trial_history(study: optuna.Study, budget: int | None = None) -> list[dict[str, Any]]:
    """Exactly the trials `best_params` chose among (`budget_trials`), as plain data for the figures. Each is
    numbered by its slot, so the history of a sweep whose workers died equals one process's."""
    return [{"number": slot_of(t), "state": t.state.name, "value": t.value, "params": dict(t.params)}
            for t in budget_trials(study, budget)]
