"""What `harness run`, `harness diagnose` and `harness list` do, behind the argument parsing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tabulate import tabulate

from harness.catalog import METHODS, TASKS
from harness.errors import DivergedError, HarnessError, RunFailed
from harness.environment import resolve_device
from harness.records import record_path, write_record
from harness.runner import (Pair, PairRunner, RunOptions, check_data, not_applicable_record,
                            resolve_hyperparameters)
from harness.space import parse_overrides
from harness.tracking import Tracker, default_uri
from harness.tuning import open_storage

log = logging.getLogger("harness")


def plan(methods: list[str], tasks: list[str], data_dir: Path | None) -> tuple[list[Pair], list[tuple]]:
    """Resolve every name and check every requirement before any work starts."""
    method_classes = [METHODS.get(m) for m in methods]
    task_objects = [TASKS.get(t)(data_dir=data_dir) for t in tasks]
    pairs, skipped = [], []
    for task in task_objects:
        for method_cls in method_classes:
            reason = method_cls.requirements.unmet(task) or method_cls.input_modalities(task).unmet(task)
            if reason:
                skipped.append((task, method_cls, reason))
            else:
                pairs.append(Pair(task, method_cls))
    if not pairs:
        task, method_cls, reason = skipped[0]
        raise HarnessError(f"method {method_cls.name} cannot run on task {task.name}: it {reason}; "
                           f"pick a task that offers this (see `harness list tasks`)")
    for task in {id(p.task): p.task for p in pairs}.values():
        check_data(task)
    return pairs, skipped


def run_command(args, data_dir: Path | None) -> int:
    options = RunOptions(
        trials=args.trials, seeds=args.seeds, epochs=args.epochs, device=args.device,
        overrides=parse_overrides(args.overrides), force=args.force, keep_old=args.keep_old, results=args.results,
        workdir=args.workdir, data_dir=data_dir, progress=not args.no_progress,
    )
    pairs, skipped = plan(args.method, args.task, data_dir)
    for pair in pairs:
        resolve_hyperparameters(pair, options.overrides)  # an unknown --set key fails before any store opens
    resolve_device(options.device)
    tracker = Tracker(args.tracking_uri or default_uri(options.workdir), options.workdir / "artifacts")
    runner = PairRunner(options, tracker, open_storage(args.storage, options.workdir))
    for task, method_cls, reason in skipped:
        log.warning("%s/%s: not applicable (%s); recorded as n/a", task.name, method_cls.name, reason)
        write_record(options.results, not_applicable_record(task, method_cls, reason))
    failures = []
    for pair in pairs:
        try:
            log.info(runner.run(pair))
        except (DivergedError, RunFailed) as exc:
            failures.append(pair.key)
            log.error("%s failed: %s", pair.key, exc)
    if failures:
        log.error("%d of %d runs failed: %s", len(failures), len(pairs), ", ".join(failures))
        return 1
    log.info("done; `harness leaderboard` regenerates %s", options.results / "LEADERBOARD.md")
    return 0


def list_command(what: str, data_dir: Path | None) -> int:
    if what == "methods":
        rows = []
        for name in METHODS.names():
            cls = METHODS.get(name)
            rows.append([name, cls.display_name, cls.requirements.describe(),
                         ", ".join(sorted(cls.search_space)) or "-", cls.description])
        print(tabulate(rows, headers=["method", "table name", "needs", "tunes", "description"]))
    else:
        rows = []
        for name in TASKS.names():
            task = TASKS.get(name)(data_dir=data_dir)
            modalities = ", ".join(f"{m.name}:{m.kind}{list(m.shape)}" for m in task.modalities)
            present = "yes" if task.data_present() else f"no ({', '.join(task.source.files)})"
            rows.append([name, task.suite, modalities, f"{task.label_kind}/{task.num_classes}",
                         task.source.kind, present, task.description])
        print(tabulate(rows, headers=["task", "suite", "modalities", "labels", "source", "data", "description"]))
    return 0


def diagnose_command(args, data_dir: Path | None) -> int:
    """Train each method as its seed record did, then estimate I(part; extra) for the task's extras."""
    from harness import diagnostics

    options = RunOptions(seeds=1, epochs=args.epochs, device=args.device, overrides=parse_overrides(args.overrides),
                         results=args.results, workdir=args.workdir, data_dir=data_dir,
                         progress=not args.no_progress)
    pairs, skipped = plan(args.method, args.task, data_dir)
    for task, method_cls, reason in skipped:
        log.warning("%s/%s: not applicable (%s); skipped", task.name, method_cls.name, reason)
    tracker = Tracker(args.tracking_uri or default_uri(options.workdir), options.workdir / "artifacts")
    runner = PairRunner(options, tracker, storage=None)
    estimator = diagnostics.ClassifierMI()
    for pair in pairs:
        hparams, epochs, source = _scored_configuration(runner, pair, args.seed)
        data = pair.task.load()
        protocol = {"epochs": epochs, "seed": args.seed, "hparams_from": source}
        with tracker.parent_run(f"diagnostics/{pair.task.name}", pair.method_cls.name,
                                {"hparams": hparams, **protocol}):
            scores, method, _ = runner.train_and_probe(pair, data, hparams, args.seed, epochs, with_test=False)
            rows = diagnostics.estimate(method, data, runner.device, estimator)
            tracker.log_metrics(diagnostics.numeric_summary(rows) | scores.as_metrics())
        identity = {"name": method.name, "display_name": method.display_name, "version": method.version}
        diagnostics.write_result(options.results, pair.task.name, identity, protocol, rows, pair.task.extra_symbols)
    table = options.results / diagnostics.TABLE_FILE
    table.write_text(diagnostics.render_table(options.results, args.reference))
    log.info("wrote %s", table)
    return 0


def _scored_configuration(runner: PairRunner, pair: Pair, seed: int) -> tuple[dict, int, str]:
    """The hyperparameters and epochs of the scored run for this seed, if recorded; else defaults and --set."""
    path = record_path(runner.options.results, pair.task.name, pair.method_cls.name, seed)
    _space, fixed = runner.hyperparameters(pair)
    if path.exists():
        record = json.loads(path.read_text())
        overrides = {k: fixed[k] for k in runner.options.overrides}
        # Defaults first: a record made before a hyperparameter existed ran at that default.
        # Named relative to the results folder: the published table must not carry this machine's paths.
        source = path.relative_to(runner.options.results).as_posix()
        return fixed | record["hparams"] | overrides, int(record["protocol"]["epochs"]), source
    return fixed, runner.epochs_for(pair.task), "defaults"


def data_check_command(task_name: str, data_dir: Path | None) -> int:
    """Validate a task's files and print what was found; a problem raises one HarnessError line."""
    from harness.datacheck import check_task, report_lines

    task = TASKS.get(task_name)(data_dir=data_dir)
    print("\n".join(report_lines(task, check_task(task))))
    return 0
