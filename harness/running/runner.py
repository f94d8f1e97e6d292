"""Runs one (task, method) pair: tune on validation, retrain the best
configuration with K seeds, score the test split once per seed, record it all.

This module decides and coordinates: which seeds a run trains, the pair's study and its claims, the tuned
configuration, the history and what a worker reports when the pair is done. The training itself (a trial,
a seed, train_and_probe) is harness.running.pair_training's."""

from __future__ import annotations

import contextlib
import enum
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.api.errors import RunFailed
from harness.api.space import Param
from harness.api.task import Task, TaskData
from harness.results import fingerprints
from harness.results.identity import study_name
from harness.results.publishing import run_report
from harness.results.publishing.history import history_path
from harness.results.replacing import write_keeping
from harness.running import distributed, environment, provenance, request, threads
from harness.running.checkpoint import SeedCheckpoint, checkpoint_path
from harness.running.coordination import WAIT, Coordinator, mutex_for
from harness.running.pair import Pair, resolve_hyperparameters
from harness.running.pair_training import CLAIM_TAG, COMMIT_TAG, PairSweep, PairTrainer
from harness.running.request import RunOptions
from harness.running.resume import ResumePlan, plan_resume
from harness.running.tracking import Tracker
from harness.running.tuning import best_params, open_study, sampler_for, spent_trials, trial_history

log = logging.getLogger(__name__)

BEST_PARAM_PREFIX = "best."  # the tuned configuration, as searchable params of the parent run


class Step(enum.Enum):
    WORKED = "worked"  # a trial or a seed was run
    WAITING = "waiting"  # other workers hold what is left; ask again soon
    DONE = "done"  # every seed of the pair is recorded or settled


class PairRunner:
    def __init__(self, options: RunOptions, tracker: Tracker, storage, coordinator: Coordinator | None = None):
        self.options = options
        self.tracker = tracker
        self.storage = storage
        self.coordinator = coordinator or Coordinator(mutex_for(None, options.workdir), force=options.force)
        self._sweeps: dict[str, PairSweep] = {}
        self._plans: dict[str, ResumePlan] = {}  # decided, not yet applied (begin)
        self.device = environment.resolve_device(options.device)
        self.trainer = PairTrainer(options, tracker, self.coordinator, self.device)
        environment.git_commit()  # pin the code's commit now, before any long work
        if self.device.type == "cpu":
            threads.announce()  # fits elsewhere that start while this one loads its data count it

    # -- what to run -------------------------------------------------------------------------

    def hyperparameters(self, pair: Pair) -> tuple[dict[str, Param], dict[str, Any]]:
        return resolve_hyperparameters(pair, self.options.overrides)

    def seeds_to_run(self, pair: Pair, identity: dict[str, Any]) -> list[int]:
        """The seeds whose records do not stand for this identity; records it may not replace are refused here."""
        plan = plan_resume(self.options.results, identity, force=self.options.force, keep_old=self.options.keep_old)
        self._plans[pair.key] = plan
        return plan.train

    def begin(self) -> None:
        """Once every pair is decided and has joined its study: say what each plan decided, and keep the records
        --force replaces in replaced/. Not before, so a command refused for any pair has moved nothing."""
        for plan in self._plans.values():
            plan.apply()
        self._plans.clear()

    def protocol(self, pair: Pair, space: dict[str, Param], fixed: dict[str, Any]) -> dict[str, Any]:
        return request.protocol(pair.method_cls.trains, self.epochs_for(pair.task), self.options.trials,
                                self.options.seeds, space, fixed, self.bf16(pair.task), self.options.world_size)

    # The training is the PairTrainer's; these stay the runner's for the commands that train one configuration.
    def fit_threads(self) -> contextlib.AbstractContextManager[int]:
        return self.trainer.fit_threads()

    def bf16(self, task: Task) -> bool:
        return self.trainer.bf16(task)

    def train_and_probe(self, pair: Pair, data: TaskData, hparams, seed: int, epochs: int, on_epoch=None,
                        with_test: bool = True, preemptible: bool = False, checkpoint: SeedCheckpoint | None = None):
        return self.trainer.train_and_probe(pair, data, hparams, seed, epochs, on_epoch, with_test, preemptible,
                                            checkpoint)

    def identity(self, pair: Pair, space: dict[str, Param], fixed: dict[str, Any], fingerprint: str):
        return request.identity(pair.task.identity(), fingerprint, pair.method_cls, self.protocol(pair, space, fixed),
                                space, fixed, task_module=type(pair.task).__module__,
                                method_module=pair.method_cls.__module__)

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
        key = fingerprints.source_key(task.identity(), task.source.kind, task.source.files, task.data_dir)
        return fingerprints.cached(self.options.workdir, key), key

    def epochs_for(self, task: Task) -> int:
        return self.options.epochs or task.default_epochs

    # -- running ---------------------------------------------------------------------------------

    def step(self, pair: Pair) -> Step:
        """Do one piece of the pair's work (a trial or a seed), as the shared storage hands it out."""
        sweep = self._sweep(pair)
        needed = [s for s in sweep.needed if s not in sweep.settled]
        if not needed:
            return Step.DONE
        for seed, claim in self.coordinator.settled_seeds(sweep.study, needed, sweep.accepts).items():
            sweep.settle(seed, claim, self.options.results)
        needed = [s for s in needed if s not in sweep.settled]
        if not needed:
            return Step.DONE
        self._prepare_to_train(pair, sweep)
        if sweep.hparams is None:
            trial = self.coordinator.claim_trial(sweep.study, self.options.trials, sampler_for) if sweep.tunes else None
            self.trainer.end_lost_trial_runs(sweep)
            if trial == WAIT:
                return Step.WAITING
            if trial is not None:
                self.trainer.run_trial(pair, sweep, trial)
                return Step.WORKED
            tuned = best_params(sweep.study, self.options.trials) if sweep.tunes else {}
            # Only what is still in the space is taken from the study: a value fixed with --set always wins.
            sweep.hparams = sweep.fixed | {k: v for k, v in tuned.items() if k in sweep.space}
            self.tracker.log_dict({"best": sweep.hparams}, "best_hparams.json", run_id=sweep.parent_run)
            best = {f"{BEST_PARAM_PREFIX}{key}": value for key, value in sweep.hparams.items()}
            self.tracker.log_params_once(sweep.parent_run, best)
        seed, lost = self.coordinator.claim_seed(sweep.study, needed, sweep.accepts)
        self.tracker.delete_runs_tagged(sweep.parent_run, CLAIM_TAG, lost)
        if seed is None:
            return Step.WAITING
        claim_id = self.coordinator.seed_claim_id(sweep.study, seed)
        try:
            record, curve = self.trainer.run_seed(pair, sweep, seed, claim_id)
        except distributed.RanksFailed:  # the run lost a rank: one death, as a lost single process is
            self.coordinator.give_back_seed(sweep.study, seed, preempted=False)
            raise
        except BaseException:
            self.coordinator.give_back_seed(sweep.study, seed, preempted=True)
            raise
        # Settled in the storage first: a worker whose lease ran out (its seed was taken over, its MLflow run
        # removed) writes nothing, so no record points at a run that is gone.
        settled = self.coordinator.finish_seed(sweep.study, seed, claim_id, asdict(record) if record else None,
                                               curve)
        if not settled:
            checkpoint_path(self.options.workdir, sweep.identity, seed).unlink(missing_ok=True)
            return Step.WORKED
        sweep.settled.add(seed)
        if record is None:
            sweep.diverged.add(seed)
        else:
            write_keeping(self.options.results, record)  # over a record only with --force; the old is kept
            sweep.curves[seed] = curve
            sweep.trained += 1
        # Only now: a process ended before the record was written resumes from the checkpoint.
        checkpoint_path(self.options.workdir, sweep.identity, seed).unlink(missing_ok=True)
        return Step.WORKED

    def prepare(self, pair: Pair) -> None:
        """Decide what the pair needs and join its study, before any pair's work starts: a definition
        that clashes with a running sweep's is refused before anything is trained."""
        self._sweep(pair)

    def finish(self, pair: Pair) -> run_report.PairOutcome:
        """What this worker did for a finished pair; RunFailed if a seed of this sweep diverged."""
        sweep = self._sweeps[pair.key]
        outcome = run_report.PairOutcome(pair.task.name, pair.method_cls.name, "", sweep.parent_run or None)
        if sweep.study is None:
            outcome.message = run_report.nothing_to_train(pair.key)
            return outcome
        if sweep.curves:  # this worker trained seeds: their curves and the tuning history go beside the records
            outcome.figure = self._keep_history(pair, sweep)
        if sweep.parent_run:
            self.tracker.end_run(sweep.parent_run)  # every worker that saw the pair done says so; once is enough
        self.coordinator.leave(sweep.study)
        if sweep.failed:
            seed, reason = min(sweep.failed.items())
            raise RunFailed(f"seed(s) {sorted(sweep.failed)} failed: seed {seed}: {reason}; the other seeds were "
                            "recorded, and running the command again tries them once more")
        if sweep.diverged:
            raise RunFailed(f"seed(s) {sorted(sweep.diverged)} diverged; the other seeds were recorded")
        copied = f", {sweep.copied} recorded by other workers" if sweep.copied else ""
        outcome.message = f"{pair.key}: {sweep.trained} seed(s) trained and recorded{copied}"
        return outcome

    def _keep_history(self, pair: Pair, sweep: PairSweep) -> Path:
        """History file and figure beside the records; summary, figure and history on the parent run.

        With several workers, each writes every settled seed's curve (a claim carries its seed's curve), so
        whichever finishes last writes the same history."""
        results, task, method = self.options.results, pair.task.name, pair.method_cls.name
        study = sweep.study if sweep.tunes else None
        # Every seed that stands, whoever trained it: a seed trained by a worker that was killed before the
        # pair was done keeps its curve in its claim, so the history still equals one process's.
        curves = {seed: claim["curve"] for seed, claim in self.coordinator.settled_seeds(
            sweep.study, list(range(self.options.seeds)), sweep.accepts).items()
            if claim["state"] == "ok" and claim.get("curve") is not None} | sweep.curves
        figure = run_report.keep_history(
            results, task, method, pair.method_cls.display_name, study.study_name if study is not None else None,
            trial_history(study, self.options.trials) if study is not None else [], curves)
        if sweep.parent_run:
            # The test accuracy over seeds, as always, and the task's main score beside it where it is another.
            for metric in dict.fromkeys(("test_acc", pair.task.main_score)):
                interval = run_report.pair_interval(results, task, method, metric)
                if interval is not None:
                    self.tracker.log_run_metrics(sweep.parent_run, run_report.over_seeds(interval, metric))
                    # How many seeds the interval is over is a count, not a measurement: a tag, not a metric.
                    self.tracker.set_run_tags(sweep.parent_run, {f"{metric}_seeds": interval.n})
            self.tracker.log_artifact(figure, run_id=sweep.parent_run)
            self.tracker.log_artifact(history_path(results, task, method), run_id=sweep.parent_run)
        return figure

    def _sweep(self, pair: Pair) -> PairSweep:
        if pair.key not in self._sweeps:
            space, fixed = self.hyperparameters(pair)
            identity, seeds, data = self.decide(pair, space, fixed)
            for module in (type(pair.task).__module__, pair.method_cls.__module__):
                provenance.describe(module)  # read once, now: the records say what the code was when it was loaded
            # Named by the identity without seeds and budget: another space, fixed value or data never shares a
            # study. The study also holds the seeds' claims.
            study = open_study(study_name(identity), self.storage) if seeds else None
            sweep = PairSweep(space, fixed, self.protocol(pair, space, fixed), identity, seeds, study,
                              bool(space) and self.options.trials > 0, data)
            if study is not None:
                self.coordinator.join(study, sweep.definition())
            self._sweeps[pair.key] = sweep
        return self._sweeps[pair.key]

    def _prepare_to_train(self, pair: Pair, sweep: PairSweep) -> None:
        """Load the data, if deciding did not, and find (or make) the pair's one MLflow parent run."""
        if sweep.parent_run:
            return
        if sweep.data is None:
            sweep.data = pair.task.load()
        sweep.parent_run = self.coordinator.shared_value(
            sweep.study, "harness:mlflow_parent_run",
            create=lambda: self.tracker.create_run(f"harness/{pair.task.name}", pair.method_cls.name, {
                "task": pair.task.identity(), "method": pair.method_cls.name,
                "fingerprint": sweep.identity["task"]["fingerprint"], **sweep.protocol}),
            discard=self.tracker.delete_run)
        self.tracker.set_run_tags(sweep.parent_run, {COMMIT_TAG: environment.git_commit()})
        if sweep.tunes:
            log.info("%s: tuning, %d of %d trials to go", pair.key,
                     max(0, self.options.trials - spent_trials(sweep.study)), self.options.trials)

