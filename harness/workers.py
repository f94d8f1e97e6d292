"""Worker processes: each one walks the whole sweep, asking the shared storage for its next trial or seed.

A worker does not know who else is working. `--workers N` spawns N of them on this
machine (spawned, never forked: fork after torch has run can deadlock), divides the
machine's torch threads among them, and shows one progress bar read from the shared
storage; independent invocations elsewhere cooperate through the same storage.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from harness.coordination import POLL_S, SEED_PREFIX, Coordinator, mutex_for
from harness.environment import divide_threads
from harness.errors import DivergedError, HarnessError, RunFailed
from harness.runner import Pair, PairRunner, RunOptions, Step
from harness.tracking import Tracker
from harness.tuning import open_storage, open_study, spent_trials

log = logging.getLogger(__name__)


@dataclass
class WorkerSpec:
    """Everything a spawned worker needs; pickled, so tasks and methods travel as importable classes."""

    options: RunOptions
    pairs: list[Pair]
    tracking_uri: str
    storage_spec: str | None
    threads: int
    index: int


def build_runner(options: RunOptions, tracking_uri: str, storage_spec: str | None) -> PairRunner:
    tracker = Tracker(tracking_uri, options.workdir / "artifacts")
    coordinator = Coordinator(mutex_for(storage_spec, options.workdir), force=options.force)
    return PairRunner(options, tracker, open_storage(storage_spec, options.workdir), coordinator)


def sweep(runner: PairRunner, pairs: list[Pair]) -> list[str]:
    """Work until every pair is done; the keys of the pairs that failed.

    Pairs are worked in order, so one worker runs exactly as a single process always did; a worker
    that finds the rest of a pair held by others moves on to the next pair instead of idling."""
    pending, failures = list(pairs), []
    try:
        while pending:
            for pair in list(pending):
                try:
                    step = runner.step(pair)
                    if step is Step.DONE:
                        log.info(runner.finish(pair))
                except (DivergedError, RunFailed) as exc:
                    step = Step.DONE
                    failures.append(pair.key)
                    log.error("%s failed: %s", pair.key, exc)
                if step is Step.DONE:
                    pending.remove(pair)
                if step is Step.WORKED:
                    break  # back to the first unfinished pair
            else:
                if pending:
                    time.sleep(POLL_S)  # every pair left is in other workers' hands
    finally:
        runner.coordinator.close()
    return failures


def run_workers(count: int, runner: PairRunner, pairs: list[Pair], tracking_uri: str,
                storage_spec: str | None) -> bool:
    """Spawn `count` workers on this machine and show the sweep's progress until they end;
    True if some pair failed (each worker's log names it)."""
    options = runner.options
    logs = options.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    quiet = replace(options, progress=False)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=worker_main, name=f"harness-worker-{i}",
                        args=(WorkerSpec(quiet, pairs, tracking_uri, storage_spec, divide_threads(count), i),))
        for i in range(count)
    ]
    for process in processes:
        process.start()
    log.info("%d workers started; their logs are in %s", count, logs)
    try:
        _show_progress(processes, runner, pairs)
    except KeyboardInterrupt:
        # Ctrl+C reached the workers too (one process group): each gives its trial or seed back.
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()  # its work is given back when the next worker sees it dead
        raise
    codes = [p.exitcode for p in processes]
    if any(code not in (0, 1) for code in codes):
        raise HarnessError(f"a worker stopped with exit code {max(codes, key=abs)}; see {logs} and run the "
                           "same command again to finish the sweep")
    for i, code in enumerate(codes):
        if code == 1:
            log.error("worker %d saw a pair fail; see %s", i, logs / f"worker-{i}.log")
    return 1 in codes


def worker_main(spec: WorkerSpec) -> None:
    """The body of a spawned worker; its exit code says whether any pair failed."""
    import torch

    torch.set_num_threads(spec.threads)
    handler = logging.FileHandler(spec.options.workdir / "logs" / f"worker-{spec.index}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler, logging.StreamHandler(sys.stderr)])
    handler.setLevel(logging.INFO)
    logging.getLogger().handlers[1].setLevel(logging.WARNING)  # one progress display: only trouble on stderr
    for package in ("harness", "methods", "tasks"):
        logging.getLogger(package).setLevel(logging.INFO)
    try:
        runner = build_runner(spec.options, spec.tracking_uri, spec.storage_spec)
        failures = sweep(runner, spec.pairs)
    except HarnessError as exc:
        log.error("error: %s", exc)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # a bug, not a failed pair: the parent must not read it as exit code 1
        log.exception("worker %d stopped", spec.index)
        sys.exit(3)
    sys.exit(1 if failures else 0)


def _show_progress(processes, runner: PairRunner, pairs: list[Pair]) -> None:
    """One bar for the whole sweep: trials and seeds finished, as the shared storage counts them."""
    options = runner.options
    started = runner.coordinator.started
    plans = []
    for pair in pairs:
        needed = runner.seeds_to_run(pair)
        if not needed:
            continue
        space, _fixed = runner.hyperparameters(pair)
        epochs = runner.epochs_for(pair.task) if pair.method_cls.trains else 0
        trials = options.trials if space else 0
        plans.append((runner.study_name(pair, epochs), trials, needed))
    total = sum(trials + len(needed) for _name, trials, needed in plans)
    studies = [(open_study(name, runner.storage), trials, needed) for name, trials, needed in plans]
    with tqdm(total=total, desc="sweep", unit="step", disable=not options.progress) as bar:
        while any(p.is_alive() for p in processes):
            bar.n = _steps_done(studies, started)
            bar.refresh()
            time.sleep(POLL_S)
        bar.n = _steps_done(studies, started)
        bar.refresh()


def _steps_done(studies, started: float) -> int:
    done = 0
    for study, trials, needed in studies:
        claims = study._storage.get_study_system_attrs(study._study_id)
        done += min(trials, spent_trials(study))
        done += sum(1 for s in needed if claims.get(f"{SEED_PREFIX}{s}", {}).get("finished_at", 0.0) >= started)
    return done
