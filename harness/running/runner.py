"""Runs one (task, method) pair: tune on validation, retrain the best
configuration with K seeds, score the test split once per seed, record it all."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from harness.api.errors import DivergedError, HarnessError, RunFailed
from harness.api.method import AssumptionCheck, AuditData, Method
from harness.api.space import Param
from harness.api.task import Task, TaskData
from harness.results import fingerprints
from harness.results.encoders import encoder_digest, facts_of
from harness.results.identity import differences, study_name
from harness.results.publishing import run_report
from harness.results.publishing.history import history_path
from harness.results.records import Record, mlflow_server
from harness.results.replacing import write_keeping
from harness.running import distributed, environment, grouped, probe, provenance, request, saved_encoders, threads
from harness.running.checkpoint import SeedCheckpoint, checkpoint_path
from harness.running.coordination import WAIT, Coordinator, mutex_for
from harness.running.pair import Pair, resolve_hyperparameters
from harness.running.preemption import Preempted
from harness.running.request import RunOptions
from harness.running.resume import ResumePlan, plan_resume
from harness.running.tracking import Tracker
from harness.running.train import TrainConfig, extract_features, fit
from harness.running.tuning import best_params, open_study, sampler_for, spent_trials, suggest, trial_history

log = logging.getLogger(__name__)

TRIAL_SEED_OFFSET = 1000  # trials never reuse the seeds whose test scores are reported
CLAIM_TAG = "harness.seed_claim"  # on a seed's MLflow run: the claim it ran under, to find it if its worker dies
TRIAL_CLAIM_TAG = "harness.trial_claim"  # likewise on a trial's run, to end it KILLED if its worker dies
COMMIT_TAG = "harness.git_commit"  # on every run: the code that made it (a parent's: the last worker's to join)
BEST_PARAM_PREFIX = "best."  # the tuned configuration, as searchable params of the parent run


class Step(enum.Enum):
    WORKED = "worked"  # a trial or a seed was run
    WAITING = "waiting"  # other workers hold what is left; ask again soon
    DONE = "done"  # every seed of the pair is recorded or settled


@dataclass
class PairSweep:
    """What a worker knows of one pair while it works on it."""

    space: dict[str, Param]
    fixed: dict[str, Any]
    protocol: dict[str, Any]
    identity: dict[str, Any]
    needed: list[int]  # the seeds whose records do not stand for this run, as decided at the start
    study: optuna.Study | None  # None when there is nothing to train
    tunes: bool
    data: TaskData | None = None
    parent_run: str = ""
    hparams: dict[str, Any] | None = None  # set once tuning is over
    settled: set[int] = field(default_factory=set)
    diverged: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)  # seed -> why it failed for good (its worker kept dying)
    trained: int = 0
    copied: int = 0
    # seed -> per-epoch metrics, of the seeds this worker trained or found settled by another worker
    curves: dict[int, list[dict[str, float]]] = field(default_factory=dict)

    def definition(self) -> dict[str, Any]:
        """What workers sharing this pair's study must agree on (harness.running.coordination.Coordinator.join)."""
        return {"task": self.identity["task"]["name"], "method": self.identity["method"]["name"],
                **{key: self.protocol[key] for key in ("trials", "seeds", "epochs")}, "fixed": self.identity["fixed"]}

    def accepts(self, record: dict[str, Any]) -> bool:
        """A seed another worker recorded stands for this sweep as a record on disk would: same identity."""
        return not differences(record.get("identity") or {}, self.identity, record.get("hparams"))

    def settle(self, seed: int, claim: dict[str, Any], results: Path | None) -> None:
        """A seed finished by some worker: write its record here if another worker trained it."""
        if seed in self.settled:
            return
        self.settled.add(seed)
        if claim["state"] == "diverged":
            self.diverged.add(seed)
        elif claim["state"] == "failed":
            self.failed[seed] = claim["reason"]
        elif results is not None:
            write_keeping(results, Record(**claim["record"]))
            self.copied += 1
        if claim["state"] == "ok" and claim.get("curve") is not None:
            self.curves[seed] = claim["curve"]


class PairRunner:
    def __init__(self, options: RunOptions, tracker: Tracker, storage, coordinator: Coordinator | None = None):
        self.options = options
        self.tracker = tracker
        self.storage = storage
        self.coordinator = coordinator or Coordinator(mutex_for(None, options.workdir), force=options.force)
        self._sweeps: dict[str, PairSweep] = {}
        self._plans: dict[str, ResumePlan] = {}  # decided, not yet applied (begin)
        self.device = environment.resolve_device(options.device)
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

    def fit_threads(self) -> contextlib.AbstractContextManager[int]:
        """One fit's torch threads, fixed as it starts (harness.running.threads): --threads, OMP_NUM_THREADS,
        else the machine's load decides."""
        explicit = self.options.threads or environment.user_threads()
        return threads.fit_threads(explicit, self.device.type == "cpu")

    def bf16(self, task: Task) -> bool:
        if self.options.bf16 is not None:
            return self.options.bf16
        return request.bf16_by_default((m.kind for m in task.modalities), self.device.type)

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
            self._end_lost_trial_runs(sweep)
            if trial == WAIT:
                return Step.WAITING
            if trial is not None:
                self._run_trial(pair, sweep, trial)
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
            record, curve = self.run_seed(pair, sweep, seed, claim_id)
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

    def _run_trial(self, pair: Pair, sweep: PairSweep, trial: optuna.Trial) -> None:
        try:
            value = self._objective(trial, pair, sweep)
        except optuna.TrialPruned:
            self.coordinator.finish_trial(sweep.study, trial, None, TrialState.PRUNED)
        except (KeyboardInterrupt, Preempted, distributed.RanksFailed, HarnessError) as exc:  # not the trial's fault
            # Run again later. A lost rank is one death (as a lost single process is); an interruption, a
            # preemption or bad input (the user's to fix, and the rerun's trial to train) is none.
            self.coordinator.give_back_trial(sweep.study, trial,
                                             preempted=not isinstance(exc, distributed.RanksFailed))
            with contextlib.suppress(Exception):  # interrupted again, or the server is gone: the run stays FAILED
                self._end_lost_trial_runs(sweep)
            raise
        except BaseException:
            self.coordinator.finish_trial(sweep.study, trial, None, TrialState.FAIL)
            raise
        else:
            state = TrialState.FAIL if math.isnan(value) else TrialState.COMPLETE
            self.coordinator.finish_trial(sweep.study, trial, value, state)

    def _end_lost_trial_runs(self, sweep: PairSweep) -> None:
        """The MLflow runs of trials given back (their workers died) end KILLED instead of RUNNING for good."""
        self.tracker.end_runs_tagged(sweep.parent_run, TRIAL_CLAIM_TAG, self.coordinator.lost_trial_claims(),
                                     "KILLED")

    def _objective(self, trial: optuna.Trial, pair: Pair, sweep: PairSweep) -> float:
        data, epochs = sweep.data, sweep.protocol["epochs"]
        hparams = sweep.fixed | suggest(trial, sweep.space)
        # The slot, not Optuna's number, names and seeds the trial: a retry trains what the lost attempt would.
        slot = self.coordinator.trial_slot(trial)
        tags = {TRIAL_CLAIM_TAG: self.coordinator.trial_claim(trial), "harness.optuna_trial": str(trial.number),
                COMMIT_TAG: environment.git_commit()}
        with self.tracker.child_run(f"trial-{slot}", hparams, parent=sweep.parent_run, tags=tags):

            def report(method: Method, epoch: int, metrics: dict[str, float]) -> None:
                quick = probe.quick_probe_accuracy(
                    extract_features(method, data.train.subset(probe.QUICK_ROWS), self.device),
                    extract_features(method, data.val.subset(probe.QUICK_ROWS), self.device),
                    device=self.device,
                )
                self.tracker.log_metrics(metrics | {"val_quick_acc": quick}, step=epoch)
                trial.report(quick, epoch)
                if trial.should_prune():
                    self.tracker.set_tags({"status": "pruned"})
                    log.info("%s trial %d pruned after epoch %d (quick val acc %.4f)", pair.key, slot,
                             epoch + 1, quick)
                    raise optuna.TrialPruned()

            try:
                with self.fit_threads() as count:
                    trial.set_user_attr("threads", count)
                    scores, method, stats = self.train_and_probe(pair, data, hparams, TRIAL_SEED_OFFSET + slot,
                                                                 epochs, report, with_test=False,
                                                                 preemptible=True)
                    checks = self.record_checks(method, stats)
            except DivergedError as exc:
                self.tracker.set_tags({"status": "diverged", "error": str(exc)})
                log.warning("%s trial %d diverged: %s; the study goes on", pair.key, slot, exc)
                return float("nan")  # Optuna records the trial as failed, without a traceback
            self.tracker.log_metrics(scores.as_metrics())
            violated = [c for c in checks if c.failed]
            if violated:
                # A number resting on a broken assumption must never be the configuration the tuner picks.
                log.warning("%s trial %d failed its assumption check: %s", pair.key, slot,
                            "; ".join(c.detail for c in violated))
                return float("nan")
            log.info("%s trial %d: val acc %.4f with %s", pair.key, slot, scores.val_acc, _short(hparams))
            return scores.val_acc

    def train_and_probe(self, pair: Pair, data: TaskData, hparams, seed: int, epochs: int, on_epoch=None,
                        with_test: bool = True, preemptible: bool = False, checkpoint: SeedCheckpoint | None = None):
        """`preemptible`: training stops after the step at which SIGTERM or SIGUSR1 came (Preempted), keeping its
        state in `checkpoint` if given, and resumes from the state `checkpoint` holds."""
        generator = environment.seed_everything(seed)
        method = pair.method_cls(pair.task, hparams)
        stats = None
        if method.trains:
            config = TrainConfig(epochs=epochs, batch_size=int(hparams["batch_size"]), lr=float(hparams["lr"]),
                                 weight_decay=float(hparams["weight_decay"]), device=self.device,
                                 progress=self.options.progress, bf16=self.bf16(pair.task), preemptible=preemptible)
            distributed.lead(pair.key, hparams, seed, config)  # the other ranks, if any, train it with this one
            stats = fit(method, data, config, generator, on_epoch, checkpoint)
        else:
            method.to(self.device)  # as fit does: prepare builds what it builds on the run's device
            method.prepare(data.train)
        features = [extract_features(method, split, self.device) for split in (data.train, data.val)]
        test = extract_features(method, data.test, self.device) if with_test else None
        scores = probe.linear_probe(*features, test, device=self.device)
        extra_name = pair.task.group_extra
        if test is not None and extra_name is not None:
            # The task says which member of its class each row is: score the classes' held-out members too.
            splits = [grouped.GroupedFeatures(*found, grouped.split_groups(split, extra_name, pair.task.name))
                      for found, split in zip((*features, test), (data.train, data.val, data.test))]
            scores = dataclasses.replace(scores, extra=grouped.heldout_group_scores(*splits, device=self.device))
        return scores, method, stats

    def run_seed(self, pair: Pair, sweep: PairSweep, seed: int, claim_id: str
                 ) -> tuple[Record | None, list[dict[str, float]] | None]:
        """Train and score one seed: its record (for the caller to write once the claim is settled) and its
        per-epoch curve; None if it diverged, or if another worker took the seed over meanwhile."""
        data, identity, hparams, protocol = sweep.data, sweep.identity, sweep.hparams, sweep.protocol
        checkpoint = SeedCheckpoint.open(self.options.workdir, identity, seed, hparams)
        resumed = checkpoint.state["extra"] if checkpoint.state is not None else {"curve": [], "elapsed_s": 0.0}
        # A resumed seed's cost counts the time its earlier, preempted runs trained it.
        started = time.perf_counter() - resumed["elapsed_s"]
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        curve: list[dict[str, float]] = list(resumed["curve"])
        checkpoint.extra = lambda: {"curve": curve, "elapsed_s": time.perf_counter() - started}

        def validate(method: Method, epoch: int, metrics: dict[str, float]) -> None:
            # Reads the model in eval mode and draws no torch randomness, so training is the same with or without it.
            quick = probe.quick_probe_accuracy(
                extract_features(method, data.train.subset(probe.QUICK_ROWS), self.device),
                extract_features(method, data.val.subset(probe.QUICK_ROWS), self.device))
            curve.append(metrics | {"val_quick_acc": quick})

        try:
            with self.tracker.child_run(f"seed-{seed}", hparams | {"seed": seed}, parent=sweep.parent_run,
                                        tags={CLAIM_TAG: claim_id, COMMIT_TAG: environment.git_commit()}) as run_id:
                with self.fit_threads() as count:
                    try:
                        scores, method, stats = self.train_and_probe(pair, data, hparams, seed, protocol["epochs"],
                                                                     validate, preemptible=True, checkpoint=checkpoint)
                    except DivergedError as exc:
                        self.tracker.set_tags({"status": "diverged", "error": str(exc)})
                        log.error("%s seed %d diverged: %s; no record written", pair.key, seed, exc)
                        return None, None
                    except Preempted:
                        self.tracker.set_tags({"status": "preempted"})  # the rerun's run of this seed holds its record
                        raise
                    if not self.coordinator.holds_seed(sweep.study, seed, claim_id):
                        raise _ClaimLost
                    for epoch, metrics in enumerate(curve):
                        self.tracker.log_metrics(metrics, step=epoch)
                    # Measured before the audit: the record's cost is what training and scoring the method took.
                    wall = time.perf_counter() - started
                    peak = environment.peak_memory_mb(self.device)
                    # Kept before the audit, so the file holds exactly the model the probe scored.
                    kept = saved_encoders.save_encoder(self.options.workdir, method, identity, seed, hparams, run_id)
                    self.tracker.log_artifact(kept, artifact_path=saved_encoders.ARTIFACT_PATH)
                    batch_size = int(hparams.get("batch_size") or pair.task.default_batch_size)
                    # The audit's numbers go into the record too: at the fit's count.
                    checks = self.record_checks(method, stats, AuditData(data.train, data.val, batch_size,
                                                                         self.device, seed))
                self.tracker.log_metrics(scores.as_metrics() | {"wall_time_s": wall, "peak_memory_mb": peak})
        except Exception as exc:
            # This worker stalled past its lease and another took the seed over, removing this run: whatever
            # MLflow says of the removed run, this worker writes nothing for the seed.
            if not isinstance(exc, _ClaimLost) and self.coordinator.holds_seed(sweep.study, seed, claim_id):
                raise
            log.warning("%s seed %d was taken over by another worker while this one trained it (its lease ran "
                        "out); this worker writes nothing for it", pair.key, seed)
            return None, None
        record = Record(
            task=pair.task.identity() | {"fingerprint": identity["task"]["fingerprint"],
                                         "provenance": provenance.describe(type(pair.task).__module__)},
            identity=identity,
            method={"name": method.name, "display_name": method.display_name, "version": method.version,
                    "provenance": provenance.describe(pair.method_cls.__module__)},
            seed=seed, status="ok", hparams=hparams, protocol=protocol | {"batch_size": hparams.get("batch_size")},
            metrics=scores.as_metrics(),
            environment={"device": self.device.type, "hardware": environment.hardware(self.device),
                         "git_commit": environment.git_commit(), **environment.versions(), "threads": count,
                         **mlflow_server(self.tracker.uri)},
            wall_time_s=round(wall, 2), peak_memory_mb=round(peak, 1),
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            mlflow_run_id=run_id, checks={c.name: c.as_record() for c in checks}, notes=method.record_notes(),
        )
        record.encoder = encoder_digest(record, facts_of(pair.method_cls, pair.task))
        main = pair.task.main_score
        headline = "" if main == "test_acc" else f"{main} {scores.as_metrics().get(main, float('nan')):.4f}, "
        log.info("%s seed %d: %stest acc %.4f, macro-F1 %.4f (%.0f s)", pair.key, seed, headline, scores.test_acc,
                 scores.test_f1, wall)
        for check in checks:
            if check.failed:
                log.warning("%s seed %d: recorded, but its assumption check failed: %s", pair.key, seed, check.detail)
        return record, curve

    def record_checks(self, method: Method, stats, audit: AuditData | None = None) -> list[AssumptionCheck]:
        """The method's assumption checks for this run, tagged on the active MLflow run; with `audit`, its
        held-out audit of the frozen model too. Final seeds only: cheap enough for trials, but a method whose
        bounds fail it would fail every trial (`git show 5dfef6c:results/FACTORCL_ANALYSIS.md`)."""
        checks = method.check_assumptions(stats.history if stats else [])
        if audit is not None:
            started = time.perf_counter()
            audited = method.audit(audit)
            if audited:
                log.info("%s seed %d: held-out audit of %d checks in %.1f s", method.name, audit.seed,
                         len(audited), time.perf_counter() - started)
            checks = [*checks, *audited]
        if checks:
            self.tracker.set_tags({f"check.{c.name}": c.state if c.held else f"{c.state}: {c.detail}" for c in checks})
        return checks


class _ClaimLost(Exception):
    """This worker's claim on the seed it trains was taken over by another worker."""


def _short(hparams: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(hparams.items()))
