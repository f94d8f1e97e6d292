"""What `harness run`, `harness diagnose` and `harness list` do, behind the argument parsing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.cli.encoder_facts import encoder_facts
from harness.cli.requests import DiagnoseRequest, RunRequest
from harness.results import fingerprints
from harness.results.publishing.run_report import PairOutcome, summary_table
from harness.results.records import Record, read_record, record_path, write_record
from harness.results.replacing import Judged, judge, made_otherwise, write_keeping
from harness.running import environment, workers
from harness.running.environment import resolve_device
from harness.running.pair import Pair, check_data, not_applicable_record, resolve_hyperparameters
from harness.running.request import TRAIN_DOMAINS
from harness.running.resume import RUN_FIXES
from harness.running.runner import PairRunner, RunOptions
from harness.running.tracking import Tracker, check_uri
from harness.running.tuning import open_storage
from harness.running.workdir import default_uri

log = logging.getLogger("harness")
COLLECT_FIXES = "--force writes the collected ones and keeps the old records in replaced/ beside them, or give " \
    "another --results"


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


def check_files(pairs: list[Pair], workdir: Path) -> None:
    """Load each file-backed task whose files changed since they last loaded cleanly (no fingerprint is
    cached for them as they are now), so a damaged file is refused before anything is written."""
    for task in {id(p.task): p.task for p in pairs}.values():
        if task.source.kind != "files":
            continue
        key = fingerprints.source_key(task.identity(), task.source.kind, task.source.files, task.data_dir)
        if fingerprints.cached(workdir, key) is None:
            with _quiet():  # the pair loads them again, and says what it drops, when it trains
                task.load()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress lines while files are checked: a damaged file then gets its one error line alone."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def run_command(run: RunRequest) -> int:
    options = run.options()
    pairs, skipped = plan(run.methods, run.tasks, run.data_dir)
    not_applicable = not_applicable_records(options, skipped)
    for pair in pairs:
        resolve_hyperparameters(pair, options.overrides)  # an unknown --set key fails before any store opens
    devices = environment.worker_devices(run.workers, run.device, run.devices)  # a bad entry fails here
    tracking_uri = run.tracking_uri or default_uri(options.workdir)
    check_uri(tracking_uri)
    check_files(pairs, options.workdir)
    # Stores are created here, once, before any worker starts; a worker elsewhere finds them made.
    runner = workers.build_runner(options, tracking_uri, run.storage)
    refuse_dirty_tree(run.allow_dirty)

    def record_not_applicable() -> None:  # once every pair's plan stands: a refused run writes nothing
        for record in not_applicable:
            log.warning("%s/%s: not applicable (%s); recorded as n/a", record.task["name"], record.method["name"],
                        record.reason)
            write_keeping(options.results, record)

    if run.workers > 1:
        failed = workers.run_workers(run.workers, runner, pairs, tracking_uri, run.storage, devices,
                                     before_work=record_not_applicable)
        # The other workers' runs are in the shared stores; the table reads the records they wrote.
        outcomes = [PairOutcome(p.task.name, p.method_cls.name, "") for p in pairs]
        failures = [p.key for p in pairs] if failed else []
    else:
        with workers.limited_threads(run.threads or environment.divide_threads(1), only_lower=run.threads is None):
            failures, outcomes = workers.sweep(runner, pairs, before_work=record_not_applicable)
    print(summary_table(outcomes, options.results, tracking_uri, runner.tracker.experiment_ids(
        f"harness/{o.task}" for o in outcomes if o.parent_run_id)))
    if failures:
        if run.workers > 1:
            return 1  # each worker's log names its failed pair
        log.error("%d of %d runs failed: %s", len(failures), len(pairs), ", ".join(failures))
        return 1
    log.info("done; `harness leaderboard --results %s` draws its tables, figures and web page", options.results)
    return 0


def not_applicable_records(options: RunOptions, skipped: list[tuple]) -> list[Record]:
    """The n/a records the run writes: one whose file holds a record made under another identity is refused,
    as a seed's would be, unless --force (which keeps the old beside it) or --keep-old (which keeps it)."""
    records = []
    for task, method_cls, reason in skipped:
        record = not_applicable_record(task, method_cls, reason)
        path = record_path(options.results, task.name, method_cls.name, None)
        found = made_otherwise(path, record.identity)
        judged = Judged(f"{task.name}/{method_cls.name}", path.parent, other={path: found} if found else {})
        if found and options.keep_old:
            log.warning("%s: keeping its n/a record made under another identity (%s), as --keep-old asks",
                        judged.key, judged.what())
            continue
        if found and not options.force:
            raise judged.refusal(RUN_FIXES)
        records.append(record)
    return records


def refuse_dirty_tree(allowed: bool) -> None:
    """A record names the commit it was trained from; from uncommitted changes that name says nothing."""
    commit = environment.git_commit()
    if commit.endswith("-dirty") and not allowed:
        raise HarnessError(f"the working tree has uncommitted changes ({commit}), so records could not name the "
                           "code that made them; commit first, or pass --allow-dirty (the leaderboard marks such "
                           "records)")


def collect_command(storage_spec: str | None, workdir: Path, results: Path, force: bool = False) -> int:
    """Write every record that workers settled in the shared storage and this results folder lacks: records
    made on machines that share no disk end up here. A record already there under the same identity is left
    as it is; one made under another identity is refused (nothing written) unless --force, which keeps it
    in replaced/ beside the new one."""
    from harness.running.coordination import settled_records

    newest: dict[tuple, dict] = {}
    for record in settled_records(open_storage(storage_spec, workdir)):
        key = (record["task"]["name"], record["method"]["name"], record["seed"])
        if key not in newest or record["finished_at"] > newest[key]["finished_at"]:
            newest[key] = record
    wanted, replaced = [], {}
    for _key, fields in sorted(newest.items()):
        record = Record(**fields)
        judged = judge(results, record.identity)
        if record.seed in judged.standing:
            continue  # already there, as made
        if judged.other and not force:
            raise judged.refusal(COLLECT_FIXES)  # before anything is written
        wanted.append(record)
        replaced.setdefault(judged.key, judged)
    kept = [path for judged in replaced.values() for path in judged.set_aside()]
    for record in wanted:
        write_record(results, record)
    aside = f"; {len(kept)} replaced file(s) kept in replaced/ beside them" if kept else ""
    log.info("%d record(s) written to %s, %d already there%s", len(wanted), results / "records",
             len(newest) - len(wanted), aside)
    return 0


def diagnose_command(request: DiagnoseRequest) -> int:
    """Train each method as its seed record did, then estimate I(part; extra) for the task's extras."""
    from harness.results import diagnostics

    options = request.options()
    pairs, skipped = plan(request.methods, request.tasks, request.data_dir)
    diagnostics.check_side_variables([pair.task for pair in pairs], TASKS)
    facts = encoder_facts()
    diagnostics.render_table(options.results, request.reference, facts)  # a damaged result or --reference fails now
    # Every configuration is read and checked (records, --set) before any store opens or any pair trains.
    configurations = [(pair, *_scored_configuration(options, pair, request.seed)) for pair in pairs]
    resolve_device(options.device)
    check_files(pairs, options.workdir)
    for task, method_cls, reason in skipped:
        log.warning("%s/%s: not applicable (%s); skipped", task.name, method_cls.name, reason)
    tracker = Tracker(request.tracking_uri or default_uri(options.workdir), options.workdir / "artifacts")
    runner = PairRunner(options, tracker, storage=None)
    estimator = diagnostics.ClassifierMI()
    for pair, hparams, epochs, source in configurations:
        data = pair.task.load()
        protocol = {"epochs": epochs, "seed": request.seed, "hparams_from": source}
        with tracker.parent_run(f"diagnostics/{pair.task.name}", pair.method_cls.name,
                                {"hparams": hparams, **protocol}):
            with runner.fit_threads():
                scores, method, _ = runner.train_and_probe(pair, data, hparams, request.seed, epochs, with_test=False)
                rows = diagnostics.estimate(method, data, runner.device, estimator)
            tracker.log_metrics(diagnostics.numeric_summary(rows) | scores.as_metrics())
        identity = {"name": method.name, "display_name": method.display_name, "version": method.version}
        diagnostics.write_result(options.results, pair.task.name, identity, protocol, rows, pair.task.extra_symbols)
    table = options.results / diagnostics.TABLE_FILE
    table.write_text(diagnostics.render_table(options.results, request.reference, facts))
    log.info("wrote %s", table)
    return 0


def _scored_configuration(options: RunOptions, pair: Pair, seed: int) -> tuple[dict, int, str]:
    """The hyperparameters and epochs of the scored run for this seed, if recorded; else defaults and --set."""
    path = record_path(options.results, pair.task.name, pair.method_cls.name, seed)
    _space, fixed = resolve_hyperparameters(pair, options.overrides)
    if not path.exists():
        return fixed, options.epochs or pair.task.default_epochs, "defaults"
    record = read_record(path)
    domains = TRAIN_DOMAINS | pair.method_cls.domains
    stray = next((k for k, v in record.hparams.items() if k in domains and not domains[k].contains(v)), None)
    epochs = record.protocol.get("epochs")
    if stray is not None or isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        problem = (f"hyperparameter {stray}={record.hparams[stray]!r} is not {domains[stray].describe()}"
                   if stray is not None else f"protocol epochs {epochs!r} is not a whole number >= 0")
        raise HarnessError(f"{path}: {problem}; regenerate it (`harness run ... --force`) or delete the file")
    overrides = {k: fixed[k] for k in options.overrides}
    # Defaults first: a record made before a hyperparameter existed ran at that default.
    # Named relative to the results folder: the published table must not carry this machine's paths.
    source = path.relative_to(options.results).as_posix()
    return fixed | record.hparams | overrides, epochs, source


def data_check_command(task_name: str, data_dir: Path | None) -> int:
    """Validate a task's data (files, or generated rows) and print what was found; a problem raises one
    HarnessError line."""
    from harness.cli.datacheck import check_task, report_lines

    task = TASKS.get(task_name)(data_dir=data_dir)
    with _quiet():
        summaries = check_task(task)
    print("\n".join(report_lines(task, summaries)))
    return 0
