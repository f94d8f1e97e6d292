"""`harness reproduce RECORD.json`: rerun one record's exact configuration and compare.

The rerun uses the record's task (name, version, parameters), method (name,
version), hyperparameters, seed and epochs, with the same code path as the
scored seed of `harness run`. It writes no record. It refuses, with one line,
when what it would run is not what the record ran: another task or method
version, a plugin's code edited since, other task parameters, data with
another fingerprint, or a record (or a working tree) with uncommitted
changes, whose code nobody can name;
`--force` reruns anyway, and says so. It trains at the record's thread count, which
the numbers depend on (harness/running/threads.py); a record made before records
kept the count is rerun at this machine's default, and the output says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from tabulate import tabulate

from harness.api.catalog import METHODS, TASKS
from harness.api.errors import HarnessError
from harness.cli.requests import ReproduceRequest
from harness.results import stats
from harness.results.records import Record, read_record
from harness.results.identity import CODE
from harness.running import environment
from harness.running.provenance import code_digest
from harness.running.pair import Pair, check_data, resolve_hyperparameters
from harness.running.runner import PairRunner
from harness.running.tracking import Tracker
from harness.running.workdir import default_uri

log = logging.getLogger(__name__)
COMPARED = ("test_acc", "test_f1", "val_acc", "val_f1")


def load_record(path: Path) -> Record:
    try:
        record = read_record(Path(path))  # an older schema is migrated as it is read
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such record; give a results/records/TASK/METHOD/seedK.json file") from None
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise HarnessError(f"{path}: not a result record ({exc}); give a seedK.json written by `harness run`") from None
    if record.status != "ok" or record.seed is None:
        raise HarnessError(f"{path}: a '{record.status}' record has nothing to reproduce; give a seedK.json record")
    return record


def mismatches(record: Record, pair: Pair) -> list[str]:
    """What differs between the record and the code here, before any data is loaded."""
    problems = []
    task, method = pair.task, pair.method_cls
    if record.task.get("version") != task.version:
        problems.append(f"task {task.name} is version {task.version} here, the record's is {record.task.get('version')}")
    if record.task.get("params", {}) != json.loads(json.dumps(task.identity()["params"])):  # as records store them
        problems.append(f"task {task.name}'s parameters differ from the record's")
    if record.method.get("version") != method.version:
        problems.append(f"method {method.name} is version {method.version} here, the record's is "
                        f"{record.method.get('version')}")
    for part, cls in (("task", type(task)), ("method", method)):
        recorded, here = (record.identity.get(part) or {}).get(CODE), code_digest(cls.__module__)
        if recorded != here:  # a plugin's code, edited since (harness.running.provenance)
            problems.append(f"{part} {cls.name}'s code is not the record's (code {here or 'none'} here, "
                            f"{recorded or 'none'} in the record)")
    recorded_commit = str(record.environment.get("git_commit", ""))
    if recorded_commit.endswith("-dirty"):
        problems.append(f"the record was made from uncommitted changes ({recorded_commit}), so its code is unknown")
    here = environment.git_commit()
    if here.endswith("-dirty"):
        problems.append(f"this working tree has uncommitted changes ({here})")
    return problems


def reproduce_command(request: ReproduceRequest) -> int:
    record = load_record(request.record)
    pair = Pair(TASKS.get(record.task["name"])(data_dir=request.data_dir), METHODS.get(record.method["name"]))
    problems = mismatches(record, pair)
    if problems and not request.force:
        raise HarnessError(f"{request.record}: will not reproduce: {'; '.join(problems)} (--force reruns anyway)")
    check_data(pair.task)
    options = dataclasses.replace(request.options(), threads=recorded_threads(record))
    data = pair.task.load()
    fingerprint = data.fingerprint()
    if fingerprint != record.task.get("fingerprint"):
        problem = f"the data's fingerprint is {fingerprint} here, the record's is {record.task.get('fingerprint')}"
        if not request.force:
            raise HarnessError(f"{request.record}: will not reproduce: {problem} (--force reruns anyway)")
        problems.append(problem)
    for problem in problems:
        log.warning("reproducing anyway (--force): %s", problem)
    # Defaults first: a record made before a hyperparameter existed ran at that default.
    hparams = resolve_hyperparameters(pair, {})[1] | record.hparams
    epochs = int(record.protocol["epochs"])
    tracking_uri = request.tracking_uri or default_uri(options.workdir)
    tracker = Tracker(tracking_uri, options.workdir / "artifacts")
    runner = PairRunner(options, tracker, storage=None)
    with tracker.parent_run(f"reproduce/{pair.task.name}", pair.method_cls.name,
                            {"record": str(request.record), "seed": record.seed, "epochs": epochs, "hparams": hparams,
                             "recorded_commit": record.environment.get("git_commit"),
                             "threads": options.threads}):
        with runner.fit_threads() as threads:
            scores, _method, _stats = runner.train_and_probe(pair, data, hparams, record.seed, epochs)
        tracker.log_metrics(scores.as_metrics())
    print(comparison(record, scores.as_metrics(), siblings(Path(request.record), record)))
    print(threads_line(options.threads, threads))
    return 0


def recorded_threads(record: Record) -> int | None:
    """The thread count the record's run trained at; None for a record that does not say (older ones)."""
    count = record.environment.get("threads")
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 1 else None


def threads_line(recorded: int | None, used: int) -> str:
    if recorded is not None:
        return f"threads: {used}, the record's"
    return (f"threads: {used}; the record does not say how many it trained with (it was made before records "
            f"kept the count), so the numbers may differ by the thread count alone")


def main_score(record: Record) -> str:
    return record.task.get("main_score", "test_acc")


def siblings(path: Path, record: Record) -> list[float]:
    """The task's main score of the pair's seeds beside the record: the noise a difference is judged against."""
    scores = []
    metric = main_score(record)
    for other in sorted(path.parent.glob("seed*.json")):
        data = json.loads(other.read_text())
        if data.get("status") == "ok" and metric in data.get("metrics", {}):
            scores.append(data["metrics"][metric])
    return scores


def comparison(record: Record, reproduced: dict[str, float], seed_scores: list[float]) -> str:
    rows = []
    for metric in dict.fromkeys((main_score(record), *record.task.get("side_scores", []), *COMPARED)):
        old, new = record.metrics.get(metric), reproduced.get(metric)
        if old is None or new is None:
            continue
        rows.append([metric, f"{100 * old:.2f}", f"{100 * new:.2f}", f"{100 * (new - old):+.2f}"])
    title = (f"{record.task['name']} / {record.method['name']} seed {record.seed} "
             f"(recorded at {record.environment.get('git_commit')}, reproduced at {environment.git_commit()})")
    lines = [title, tabulate(rows, headers=["metric (%)", "recorded", "reproduced", "difference"],
                             tablefmt="simple", disable_numparse=True)]
    if len(seed_scores) > 1:
        interval = stats.t_interval(seed_scores)
        spread = 100 * (max(seed_scores) - min(seed_scores))
        named = "test acc" if main_score(record) == "test_acc" else main_score(record)
        lines.append(f"seed-to-seed: the pair's {interval.n} recorded seeds span {spread:.2f} points of {named} "
                     f"(95% interval of their mean ± {100 * interval.half_width:.2f})")
    return "\n".join(lines)
