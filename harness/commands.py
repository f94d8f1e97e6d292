"""What `harness run` and `harness list` do, behind the argument parsing."""

from __future__ import annotations

import logging
from pathlib import Path

from tabulate import tabulate

from harness.catalog import METHODS, TASKS
from harness.errors import DivergedError, HarnessError, RunFailed
from harness.records import write_record
from harness.runner import Pair, PairRunner, RunOptions, check_data, not_applicable_record
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
            reason = method_cls.requirements.unmet(task)
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
        overrides=parse_overrides(args.overrides), force=args.force, results=args.results,
        workdir=args.workdir, data_dir=data_dir, progress=not args.no_progress,
    )
    pairs, skipped = plan(args.method, args.task, data_dir)
    tracker = Tracker(args.tracking_uri or default_uri(options.workdir), options.workdir / "artifacts")
    runner = PairRunner(options, tracker, open_storage(args.storage, options.workdir))
    for pair in pairs:
        runner.hyperparameters(pair)  # an unknown --set key fails here, before any training
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


def data_check_command(task_name: str, data_dir: Path | None) -> int:
    """Validate a task's files and print what was found; a problem raises one HarnessError line."""
    from harness.datacheck import check_task, report_lines

    task = TASKS.get(task_name)(data_dir=data_dir)
    print("\n".join(report_lines(task, check_task(task))))
    return 0
