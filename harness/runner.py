"""Runs one (task, method) pair: tune on validation, retrain the best
configuration with K seeds, score the test split once per seed, record it all."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import torch

from harness import environment, fingerprints, probe
from harness.errors import DivergedError, HarnessError, RunFailed
from harness.method import AssumptionCheck, Method
from harness.identity import run_identity, study_name
from harness.records import Record, write_record
from harness.resume import plan_resume
from harness.space import Float, Param, typed_overrides
from harness.task import Task, TaskData
from harness.tracking import Tracker
from harness.train import TrainConfig, extract_features, fit
from harness.tuning import best_params, open_study, spent_trials, suggest

log = logging.getLogger(__name__)

# Every trained method tunes its learning rate; methods add their own entries.
TRAIN_SPACE: dict[str, Param] = {"lr": Float(1e-4, 3e-3, log=True)}
TRAIN_DEFAULTS: dict[str, Any] = {"lr": 1e-3, "weight_decay": 1e-5}
TRIAL_SEED_OFFSET = 1000  # trials never reuse the seeds whose test scores are reported


@dataclass
class RunOptions:
    trials: int = 6
    seeds: int = 3
    epochs: int | None = None
    device: str = "auto"
    overrides: dict[str, str] = field(default_factory=dict)
    force: bool = False
    keep_old: bool = False  # keep records made under another identity instead of retraining them
    results: Path = Path("results")
    workdir: Path = Path(".harness")
    data_dir: Path | None = None
    progress: bool = True


@dataclass
class Pair:
    """One task and one method, resolved and checked, ready to run."""

    task: Task
    method_cls: type[Method]

    @property
    def key(self) -> str:
        return f"{self.task.name}/{self.method_cls.name}"


class PairRunner:
    def __init__(self, options: RunOptions, tracker: Tracker, storage):
        self.options = options
        self.tracker = tracker
        self.storage = storage
        self.device = environment.resolve_device(options.device)
        environment.git_commit()  # pin the code's commit now, before any long work

    # -- what to run -------------------------------------------------------------------------

    def hyperparameters(self, pair: Pair) -> tuple[dict[str, Param], dict[str, Any]]:
        return resolve_hyperparameters(pair, self.options.overrides)

    def seeds_to_run(self, pair: Pair, identity: dict[str, Any]) -> list[int]:
        """The seeds whose records do not stand for this identity; says in one line what differs."""
        plan = plan_resume(self.options.results, identity, force=self.options.force, keep_old=self.options.keep_old)
        plan.apply()
        return plan.train

    def protocol(self, pair: Pair, space: dict[str, Param], fixed: dict[str, Any]) -> dict[str, Any]:
        # A reference row (untrained encoders, raw features) trains for no epochs, and its record says so.
        epochs = self.epochs_for(pair.task) if pair.method_cls.trains else 0
        return {"epochs": epochs, "trials": self.options.trials if space else 0, "seeds": self.options.seeds,
                "batch_size": fixed.get("batch_size")}

    def identity(self, pair: Pair, space: dict[str, Param], fixed: dict[str, Any], fingerprint: str):
        """This request's run identity; the tuned keys' defaults are not fixed values and stay out of it."""
        return run_identity(pair.task.identity() | {"fingerprint": fingerprint},
                            {"name": pair.method_cls.name, "version": pair.method_cls.version},
                            self.protocol(pair, space, fixed), {k: v for k, v in fixed.items() if k not in space})

    def decide(self, pair: Pair, space, fixed) -> tuple[dict[str, Any], list[int], TaskData | None]:
        """The requested identity and the seeds to train. Data are loaded only to fingerprint them when
        no fingerprint is cached, or when there is training to do (then the cached one is verified)."""
        cached, key = self.cached_fingerprint(pair.task)
        data = None
        if cached is None:
            data = pair.task.load()
            cached = data.fingerprint()
            fingerprints.remember(self.options.workdir, key, cached)
        identity = self.identity(pair, space, fixed, cached)
        seeds = self.seeds_to_run(pair, identity)
        if seeds and data is None:
            data = pair.task.load()
            actual = data.fingerprint()
            if actual != cached:  # only if a generator changed without a new task version
                log.warning("%s: the data's fingerprint is %s, not the cached %s; deciding again", pair.key, actual,
                            cached)
                fingerprints.remember(self.options.workdir, key, actual)
                identity = self.identity(pair, space, fixed, actual)
                seeds = self.seeds_to_run(pair, identity)
        return identity, seeds, data

    def cached_fingerprint(self, task: Task) -> tuple[str | None, str]:
        files = [task.data_dir / f for f in task.source.files] if task.source.kind == "files" and task.data_dir else []
        key = fingerprints.data_key(task.identity(), files)
        return fingerprints.cached(self.options.workdir, key), key

    def epochs_for(self, task: Task) -> int:
        return self.options.epochs or task.default_epochs

    # -- running ---------------------------------------------------------------------------------

    def run(self, pair: Pair) -> str:
        space, fixed = self.hyperparameters(pair)
        identity, seeds, data = self.decide(pair, space, fixed)
        if not seeds:
            return f"{pair.key}: nothing to train (its seed records stand for this run; --force reruns)"
        fingerprint = identity["task"]["fingerprint"]
        protocol = self.protocol(pair, space, fixed)
        with self.tracker.parent_run(f"harness/{pair.task.name}", pair.method_cls.name, {
            "task": pair.task.identity(), "method": pair.method_cls.name, "fingerprint": fingerprint, **protocol,
        }):
            tuned = self.tune(pair, data, space, fixed, identity) if space and self.options.trials > 0 else {}
            # Only what is still in the space is taken from the study: a value fixed with --set always wins.
            hparams = fixed | {k: v for k, v in tuned.items() if k in space}
            self.tracker.log_dict({"best": hparams}, "best_hparams.json")
            diverged = [seed for seed in seeds
                        if not self.run_seed(pair, data, identity, hparams, seed, protocol)]
        if diverged:
            raise RunFailed(f"seed(s) {diverged} diverged; the other seeds were recorded")
        return f"{pair.key}: {len(seeds)} seed(s) trained and recorded"

    def tune(self, pair: Pair, data: TaskData, space, fixed, identity: dict[str, Any]) -> dict[str, Any]:
        # Named by the identity without seeds and budget: another space, fixed value or data never shares a study.
        study = open_study(study_name(identity), self.storage)
        epochs = identity["protocol"]["epochs"]
        remaining = self.options.trials - spent_trials(study)
        if remaining > 0:
            log.info("%s: tuning, %d of %d trials to go", pair.key, remaining, self.options.trials)
            study.optimize(lambda trial: self._objective(trial, pair, data, space, fixed, epochs),
                           n_trials=remaining)
        else:
            log.info("%s: the study already has its %d trials", pair.key, self.options.trials)
        return best_params(study, self.options.trials)

    def _objective(self, trial: optuna.Trial, pair: Pair, data: TaskData, space, fixed, epochs) -> float:
        hparams = fixed | suggest(trial, space)
        with self.tracker.child_run(f"trial-{trial.number}", hparams):

            def report(method: Method, epoch: int, metrics: dict[str, float]) -> None:
                quick = probe.quick_probe_accuracy(
                    extract_features(method, data.train.subset(probe.QUICK_ROWS), self.device),
                    extract_features(method, data.val.subset(probe.QUICK_ROWS), self.device),
                )
                self.tracker.log_metrics(metrics | {"val_quick_acc": quick}, step=epoch)
                trial.report(quick, epoch)
                if trial.should_prune():
                    self.tracker.set_tags({"status": "pruned"})
                    log.info("%s trial %d pruned after epoch %d (quick val acc %.4f)", pair.key, trial.number,
                             epoch + 1, quick)
                    raise optuna.TrialPruned()

            try:
                scores, method, stats = self.train_and_probe(pair, data, hparams, TRIAL_SEED_OFFSET + trial.number,
                                                             epochs, report, with_test=False)
            except DivergedError as exc:
                self.tracker.set_tags({"status": "diverged", "error": str(exc)})
                log.warning("%s trial %d diverged: %s; the study goes on", pair.key, trial.number, exc)
                return float("nan")  # Optuna records the trial as failed, without a traceback
            self.tracker.log_metrics(scores.as_metrics())
            violated = [c for c in self.record_checks(method, stats) if not c.held]
            if violated:
                # A number resting on a broken assumption must never be the configuration the tuner picks.
                log.warning("%s trial %d failed its assumption check: %s", pair.key, trial.number,
                            "; ".join(c.detail for c in violated))
                return float("nan")
            log.info("%s trial %d: val acc %.4f with %s", pair.key, trial.number, scores.val_acc, _short(hparams))
            return scores.val_acc

    def train_and_probe(self, pair: Pair, data: TaskData, hparams, seed: int, epochs: int, on_epoch=None,
                        with_test: bool = True):
        generator = environment.seed_everything(seed)
        method = pair.method_cls(pair.task, hparams)
        stats = None
        if method.trains:
            config = TrainConfig(epochs=epochs, batch_size=int(hparams["batch_size"]), lr=float(hparams["lr"]),
                                 weight_decay=float(hparams["weight_decay"]), device=self.device,
                                 progress=self.options.progress)
            stats = fit(method, data, config, generator, on_epoch)
        else:
            method.prepare(data.train)
        features = [extract_features(method, split, self.device) for split in (data.train, data.val)]
        test = extract_features(method, data.test, self.device) if with_test else None
        return probe.linear_probe(*features, test), method, stats

    def run_seed(self, pair: Pair, data: TaskData, identity: dict[str, Any], hparams, seed: int, protocol) -> bool:
        """Train, score and record one seed; False if it diverged (then nothing is recorded)."""
        started = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        with self.tracker.child_run(f"seed-{seed}", hparams | {"seed": seed}) as run_id:
            try:
                scores, method, stats = self.train_and_probe(pair, data, hparams, seed, protocol["epochs"])
            except DivergedError as exc:
                self.tracker.set_tags({"status": "diverged", "error": str(exc)})
                log.error("%s seed %d diverged: %s; no record written", pair.key, seed, exc)
                return False
            for epoch, metrics in enumerate(stats.history if stats else []):
                self.tracker.log_metrics(metrics, step=epoch)
            checks = self.record_checks(method, stats)
            wall = time.perf_counter() - started
            peak = environment.peak_memory_mb(self.device)
            self.tracker.log_metrics(scores.as_metrics() | {"wall_time_s": wall, "peak_memory_mb": peak})
        record = Record(
            task=pair.task.identity() | {"fingerprint": identity["task"]["fingerprint"]}, identity=identity,
            method={"name": method.name, "display_name": method.display_name, "version": method.version},
            seed=seed, status="ok", hparams=hparams, protocol=protocol | {"batch_size": hparams.get("batch_size")},
            metrics=scores.as_metrics(),
            environment={"device": self.device.type, "hardware": environment.hardware(self.device),
                         "git_commit": environment.git_commit(), **environment.versions()},
            wall_time_s=round(wall, 2), peak_memory_mb=round(peak, 1),
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            mlflow_run_id=run_id, checks={c.name: c.as_record() for c in checks},
        )
        write_record(self.options.results, record)
        log.info("%s seed %d: test acc %.4f, macro-F1 %.4f (%.0f s)", pair.key, seed, scores.test_acc,
                 scores.test_f1, wall)
        for check in checks:
            if not check.held:
                log.warning("%s seed %d: recorded, but its assumption check failed: %s", pair.key, seed, check.detail)
        return True

    def record_checks(self, method: Method, stats) -> list[AssumptionCheck]:
        """The method's assumption checks for this run, tagged on the active MLflow run."""
        checks = method.check_assumptions(stats.history if stats else [])
        if checks:
            self.tracker.set_tags({f"check.{c.name}": "held" if c.held else f"violated: {c.detail}" for c in checks})
        return checks


def resolve_hyperparameters(pair: Pair, overrides: dict[str, str]) -> tuple[dict[str, Param], dict[str, Any]]:
    """The space still to tune, and every value fixed by defaults or --set (an unknown key fails here)."""
    method, task = pair.method_cls, pair.task
    space = {**TRAIN_SPACE, **method.search_space} if method.trains else {}
    defaults = {**TRAIN_DEFAULTS, "batch_size": task.default_batch_size, **method.defaults}
    fixed = typed_overrides(overrides, space, defaults)
    return {k: v for k, v in space.items() if k not in fixed}, defaults | fixed


def not_applicable_record(task: Task, method_cls: type[Method], reason: str) -> Record:
    method = {"name": method_cls.name, "display_name": method_cls.display_name, "version": method_cls.version}
    return Record(task=task.identity(), seed=None, status="n/a", reason=reason, method=method,
                  identity=run_identity(task.identity(), method, {}, {}))


def check_data(task: Task) -> None:
    if task.data_present():
        return
    files = task.source.files
    if task.data_dir is None:
        raise HarnessError(f"task {task.name}: data not found (no --data-dir given); expected {', '.join(files)} "
                           f"there. {task.source.instructions}")
    missing = [str(task.data_dir / f) for f in files if not (task.data_dir / f).exists()]
    raise HarnessError(f"task {task.name}: data not found: {', '.join(missing)} missing; expected "
                       f"{', '.join(files)} under {task.data_dir}. {task.source.instructions}")


def _short(hparams: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hparams.items()))
