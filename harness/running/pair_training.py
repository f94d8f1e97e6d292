"""The training a worker does on one pair (harness.running.runner decides what and when): a tuning trial,
scored on validation for the study, or one of the final seeds, scored on test and made a record; both
through `train_and_probe`, which `harness diagnose` and `harness reproduce` use too. Also the sweep's state
that this work reads and the runner keeps (PairSweep), and the tags that find a dead worker's MLflow runs.

Apart from the runner so that deciding and coordinating (which seeds stand, the study, the claims, the
history) reads on its own, and everything that trains, probes and writes to a child run is in one place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from harness.api.errors import DivergedError, HarnessError
from harness.api.method import AssumptionCheck, AuditData, Method
from harness.api.space import Param
from harness.api.task import Task, TaskData
from harness.results.encoders import encoder_digest, facts_of
from harness.results.identity import differences
from harness.results.records import Record, mlflow_server
from harness.results.replacing import write_keeping
from harness.running import distributed, environment, grouped, probe, provenance, request, saved_encoders, threads
from harness.running.checkpoint import SeedCheckpoint
from harness.running.coordination import Coordinator
from harness.running.pair import Pair
from harness.running.preemption import Preempted
from harness.running.request import RunOptions
from harness.running.tracking import Tracker
from harness.running.train import TrainConfig, extract_features, fit
from harness.running.tuning import suggest

log = logging.getLogger(__name__)

TRIAL_SEED_OFFSET = 1000  # trials never reuse the seeds whose test scores are reported
CLAIM_TAG = "harness.seed_claim"  # on a seed's MLflow run: the claim it ran under, to find it if its worker dies
TRIAL_CLAIM_TAG = "harness.trial_claim"  # likewise on a trial's run, to end it KILLED if its worker dies
COMMIT_TAG = "harness.git_commit"  # on every run: the code that made it (a parent's: the last worker's to join)


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


class PairTrainer:
    """Trains and scores for one worker, on its device, logging to its tracker; the coordinator says whether
    a trial or seed is still this worker's."""

    def __init__(self, options: RunOptions, tracker: Tracker, coordinator: Coordinator, device: torch.device):
        self.options = options
        self.tracker = tracker
        self.coordinator = coordinator
        self.device = device

    def fit_threads(self) -> contextlib.AbstractContextManager[int]:
        """One fit's torch threads, fixed as it starts (harness.running.threads): --threads, OMP_NUM_THREADS,
        else the machine's load decides."""
        explicit = self.options.threads or environment.user_threads()
        return threads.fit_threads(explicit, self.device.type == "cpu")

    def bf16(self, task: Task) -> bool:
        if self.options.bf16 is not None:
            return self.options.bf16
        return request.bf16_by_default((m.kind for m in task.modalities), self.device.type)


    def run_trial(self, pair: Pair, sweep: PairSweep, trial: optuna.Trial) -> None:
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
                self.end_lost_trial_runs(sweep)
            raise
        except BaseException:
            self.coordinator.finish_trial(sweep.study, trial, None, TrialState.FAIL)
            raise
        else:
            state = TrialState.FAIL if math.isnan(value) else TrialState.COMPLETE
            self.coordinator.finish_trial(sweep.study, trial, value, state)

    def end_lost_trial_runs(self, sweep: PairSweep) -> None:
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
