"""Worker processes: each one walks the whole sweep, asking the shared storage for its next trial or seed.

A worker does not know who else is working. `--workers N` spawns N of them on this
machine (spawned, never forked: fork after torch has run can deadlock), divides the
machine's torch threads among them, and shows one progress bar read from the shared
storage; independent invocations elsewhere cooperate through the same storage.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from harness.api.errors import DivergedError, HarnessError, RunFailed
from harness.results.publishing.run_report import PairOutcome
from harness.running.coordination import POLL_S, SEED_PREFIX, Coordinator, mutex_for
from harness.running.environment import divide_threads, user_threads
from harness.running.failures import out_of_memory, out_of_memory_line
from harness.running.pair import Pair
from harness.running.preemption import EXIT_CODE, Preempted, handling_signals, stop_if_requested
from harness.running.runner import PairRunner, RunOptions, Step
from harness.running.tracking import Tracker
from harness.running.tuning import open_storage, spent_trials

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
    storage = open_storage(storage_spec, options.workdir)  # a database that is down fails before any store is made
    tracker = Tracker(tracking_uri, options.workdir / "artifacts")
    coordinator = Coordinator(mutex_for(storage_spec, options.workdir), force=options.force)
    return PairRunner(options, tracker, storage, coordinator)


def sweep(runner: PairRunner, pairs: list[Pair],
          before_work: Callable[[], None] = lambda: None) -> tuple[list[str], list[PairOutcome]]:
    """Work until every pair is done; the keys of the pairs that failed, and every pair's outcome.

    Pairs are worked in order, so one worker runs exactly as a single process always did; a worker
    that finds the rest of a pair held by others moves on to the next pair instead of idling.
    `before_work` runs once every pair is decided, before the first trial or seed."""
    pending, failures, outcomes = list(pairs), [], []
    try:
        for pair in pairs:
            # A definition that clashes with a running sweep's, or records a run may not replace, are
            # refused here, before any work.
            runner.prepare(pair)
        runner.begin()
        before_work()
        while pending:
            for pair in list(pending):
                stop_if_requested("stopped before the next trial or seed")
                try:
                    step = runner.step(pair)
                    if step is Step.DONE:
                        outcomes.append(runner.finish(pair))
                        log.info(outcomes[-1].message)
                except (DivergedError, RunFailed, MemoryError, RuntimeError) as exc:
                    step = Step.DONE
                    failures.append(pair.key)
                    outcomes.append(PairOutcome(pair.task.name, pair.method_cls.name, _failure_line(exc)))
                    log.error("%s failed: %s", pair.key, outcomes[-1].message)
                if step is Step.DONE:
                    pending.remove(pair)
                if step is Step.WORKED:
                    break  # back to the first unfinished pair
            else:
                if pending:
                    time.sleep(POLL_S)  # every pair left is in other workers' hands
    finally:
        runner.coordinator.close()
    return failures, outcomes


def _failure_line(exc: BaseException) -> str:
    """A pair's failure in one line; anything else that reaches here is a defect, re-raised with its traceback."""
    if isinstance(exc, (DivergedError, RunFailed)):
        return str(exc)
    if out_of_memory(exc):
        return out_of_memory_line(exc)
    raise exc


def run_workers(count: int, runner: PairRunner, pairs: list[Pair], tracking_uri: str,
                storage_spec: str | None, devices: list[str] | None = None,
                before_work: Callable[[], None] = lambda: None) -> bool:
    """Work as worker 0 beside `count - 1` spawned workers, worker i on `devices[i]`, showing the sweep's
    progress until all end; True if some pair failed (each worker's log names it). `before_work` runs once
    worker 0 has decided every pair, before any worker starts."""
    devices = devices or [runner.options.device] * count
    options = runner.options
    logs = options.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    quiet = replace(options, progress=False)
    threads = options.threads or divide_threads(count)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=worker_main, name=f"harness-worker-{i}",
                        args=(WorkerSpec(replace(quiet, device=devices[i]), pairs, tracking_uri, storage_spec,
                                         threads, i),))
        for i in range(1, count)
    ]
    # This process is worker 0: it has paid for its imports already, and works while the others start. It
    # decides and joins every pair first, so a definition that clashes with a running sweep's spawns nothing.
    myself = PairRunner(replace(quiet, device=devices[0]), runner.tracker, runner.storage, runner.coordinator)
    try:
        plan = _progress_plan(myself, pairs)
        myself.begin()  # before any other worker starts: they find the replaced records already aside
        before_work()
    except BaseException:
        runner.coordinator.close()  # leave the studies it joined before the refusal
        raise
    for process in processes:
        process.start()
    log.info("%d workers started; their logs are in %s", count, logs)
    finished = threading.Event()
    progress = threading.Thread(target=_show_progress, daemon=True, args=(
        plan, runner.coordinator.started, finished, options.progress))
    progress.start()
    # SIGTERM or SIGUSR1 sent to this process (`kill`, a scheduler) reach the workers too: each finishes its
    # step, keeps its seed's state and exits with preemption's code.
    forward = lambda: [process.pid for process in processes if process.pid is not None]  # noqa: E731
    try:
        with _logs_to(logs / "worker-0.log"), limited_threads(threads), handling_signals(forward):
            failures, _outcomes = sweep(myself, pairs)
    finally:
        # On Ctrl+C the others were interrupted too (one process group): each gives its trial or seed back.
        for process in processes:
            process.join()
        finished.set()
        progress.join()
    codes = [process.exitcode for process in processes]
    if any(code not in (0, 1, EXIT_CODE) for code in codes):
        raise HarnessError(f"a worker stopped with exit code {max(codes, key=abs)}; see {logs} and run the "
                           "same command again to finish the sweep")
    if EXIT_CODE in codes:
        raise Preempted(f"the workers were stopped; the training state of their seeds in progress is kept in "
                        f"{options.workdir / 'checkpoints'}")
    for i, code in enumerate([1 if failures else 0, *codes]):
        if code == 1:
            log.error("worker %d saw a pair fail; see %s", i, logs / f"worker-{i}.log")
    return bool(failures) or 1 in codes


@contextlib.contextmanager
def limited_threads(threads: int, only_lower: bool = False) -> Iterator[None]:
    """Torch's and the BLAS libraries' threads (the probe's) held to this worker's share of the CPUs;
    with `only_lower`, only where torch's own default would start more (one process on a free machine keeps
    torch's choice of physical cores, but not more than its cgroup or affinity mask allows)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    if only_lower and (user_threads() is not None or threads >= before):
        yield
        return
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """This worker's progress lines into its log file; only warnings reach the terminal's one display."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    root = logging.getLogger()
    levels = [(h, h.level) for h in root.handlers]
    for terminal, _level in levels:
        terminal.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for terminal, level in levels:
            terminal.setLevel(level)


def worker_main(spec: WorkerSpec) -> None:
    """The body of a spawned worker; its exit code says whether any pair failed."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for package in ("harness", "methods", "tasks"):
        logging.getLogger(package).setLevel(logging.INFO)
    try:
        with _logs_to(spec.options.workdir / "logs" / f"worker-{spec.index}.log"), limited_threads(spec.threads), \
                handling_signals():
            runner = build_runner(spec.options, spec.tracking_uri, spec.storage_spec)
            failures, _outcomes = sweep(runner, spec.pairs)
    except Preempted as exc:
        log.warning("worker %d stopped: %s", spec.index, exc)
        sys.exit(EXIT_CODE)
    except HarnessError as exc:
        log.error("error: %s", exc)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # a bug, not a failed pair: the parent must not read it as exit code 1
        log.exception("worker %d stopped", spec.index)
        sys.exit(3)
    sys.exit(1 if failures else 0)


def _progress_plan(runner: PairRunner, pairs: list[Pair]) -> tuple[list, int]:
    """Each pair's study with its trial budget and the seeds still to record; the sweep's step count.
    Read from the runner's own decisions, so a pair is decided once."""
    plans = []
    for pair in pairs:
        sweep = runner._sweep(pair)
        if sweep.study is not None:
            plans.append((sweep.study, runner.options.trials if sweep.tunes else 0, sweep.needed))
    return plans, sum(trials + len(needed) for _study, trials, needed in plans)


def _show_progress(plan: tuple[list, int], started: float, finished: threading.Event, enabled: bool) -> None:
    """One bar for the whole sweep: trials and seeds finished, as the shared storage counts them."""
    studies, total = plan
    with tqdm(total=total, desc="sweep", unit="step", disable=not enabled) as bar:
        while not finished.wait(POLL_S):
            bar.n = _steps_done(studies, started)
            bar.refresh()
        bar.n = _steps_done(studies, started)
        bar.refresh()


def _steps_done(studies, started: float) -> int:
    done = 0
    for study, trials, needed in studies:
        claims = study._storage.get_study_system_attrs(study._study_id)
        done += min(trials, spent_trials(study))
        done += sum(1 for s in needed if claims.get(f"{SEED_PREFIX}{s}", {}).get("finished_at", 0.0) >= started)
    return done
