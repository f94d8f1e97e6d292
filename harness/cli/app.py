"""The `harness` command: run, status, collect, leaderboard, reproduce, list, data check, diagnose."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from harness.api.errors import HarnessError
from harness.cli.requests import DiagnoseRequest, ReproduceRequest, RunRequest
from harness.running import preemption
from harness.running.request import DEVICE_FORMS, is_device_name

log = logging.getLogger("harness")
DATA_DIR_ENV = "HARNESS_DATA_DIR"
# Every command's records folder: a user's own runs, apart from the published records in results/, so a fresh
# clone's first run trains and nothing is written into results/ unless a command is given `--results results`.
RUNS_DIR = "runs"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not 0 <= value < 2**32:  # what every RNG the harness seeds accepts
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**32 - 1, got {value}")
    return value


def _folder(text: str) -> Path:
    """A folder to write into: it need not exist yet, but the nearest part of it that does must be a
    writable folder. (Defaults are given as text, so argparse checks them this way too.)"""
    path = Path(text)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, not a folder; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing} is not writable; give a folder you can write to")
    return path


def _paths(text: str) -> list[Path]:
    paths = [Path(p.strip()) for p in text.split(",") if p.strip()]
    if not paths:
        raise argparse.ArgumentTypeError("give at least one folder")
    return paths


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name")
    return names


def _device(text: str) -> str:
    """Refused by its spelling here, before torch loads; whether the machine has it is checked when training."""
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"'{text}' is no device; choose {DEVICE_FORMS}")
    return text


def _devices(text: str) -> list[str]:
    return [_device(name) for name in _names(text)]


class _Version(argparse.Action):
    """`--version`: the running code's version and, where known, the commit it came from (as a record would
    name it). Looked up only when asked, and without torch. harness.__version__, not the installed
    distribution's metadata: an install made from another checkout (or before a version bump) has its own."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from harness import __version__
        from harness.running.commit import git_commit

        commit = git_commit()
        print(f"harness {__version__}" + (f" (commit {commit})" if commit != "unknown" else ""))
        parser.exit()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, as every other bad input
        raise HarnessError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description=__doc__)
    parser.add_argument("--version", action=_Version, help="print the harness's version and git commit, and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                help="what to do; `harness COMMAND -h` explains one")

    run = sub.add_parser("run", help="tune, train and score methods on tasks")
    run.add_argument("--method", required=True, type=_names, help="method name(s), comma-separated")
    run.add_argument("--task", required=True, type=_names, help="task name(s), comma-separated")
    run.add_argument("--trials", type=_positive, default=6, help="Optuna trials per (task, method) (default 6)")
    run.add_argument("--seeds", type=_positive, default=3, help="seeds for the final retraining (default 3)")
    run.add_argument("--epochs", type=_positive, help="epochs per training run (default: the task's)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    where.add_argument("--devices", type=_devices, metavar="D1,D2",
                       help="a device per worker on this machine, in turn (cuda:0,cuda:1); --workers defaults "
                            "to their number")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite in the work folder)")
    run.add_argument("--storage", help="Optuna storage: a .journal file, sqlite:/// or postgresql:// URL")
    run.add_argument("--data-dir", type=Path, help=f"root of downloaded datasets (or ${DATA_DIR_ENV})")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="fix a hyperparameter instead of tuning it; repeatable")
    resume = run.add_mutually_exclusive_group()
    resume.add_argument("--force", action="store_true",
                        help="rerun seeds whose records already exist, and replace records made under another "
                             "identity (each old record is kept in replaced/ beside it)")
    resume.add_argument("--keep-old", action="store_true",
                        help="keep records made under another identity (epochs, budget, --set, versions, data) "
                             "and train nothing for their pair (without it or --force, such records are refused)")
    run.add_argument("--allow-dirty", action="store_true",
                     help="run from a working tree with uncommitted changes (its records are marked)")
    run.add_argument("--results", type=_folder, default=RUNS_DIR,
                     help=f"records folder (default {RUNS_DIR}/; `--results results` publishes)")
    run.add_argument("--workdir", type=_folder, default=".harness", help="working stores (default .harness/)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--workers", type=_positive,
                     help="worker processes on this machine sharing the sweep (default 1, or one per --devices "
                          "entry); with several GPUs each worker gets its own")
    run.add_argument("--threads", type=_positive, metavar="N",
                     help="torch threads of every training run, in each worker (default: OMP_NUM_THREADS if set, "
                          "else chosen as each run starts from the cores other work leaves free); results depend "
                          "on the count, and the records say it")
    run.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                     help="bfloat16 autocast for training's forward passes; the records say so (default: on for "
                          "tasks with images on CUDA, off otherwise; --no-bf16 turns it off)")
    run.add_argument("--nproc", type=_positive, default=1,
                     help="train each run data-parallel on N ranks of this machine, started through torchrun's "
                          "launcher (one GPU each); --set batch_size is the global batch (docs/distributed.md)")

    board = sub.add_parser("leaderboard", help="regenerate LEADERBOARD.md, index.html and figures/ from the records")
    board.add_argument("--results", type=_folder, default=RUNS_DIR,
                       help="records folder to draw the tables from; LEADERBOARD.md, index.html and figures/ are "
                            "written there (default %(default)s/; `--results results` reads and writes the published folder)")
    board.add_argument("--with", dest="overlays", type=_paths, action="append", default=[], metavar="FOLDER",
                       help="also show the rows of this records folder (e.g. the published results), each row "
                            "named with its folder and cells off the published protocol marked; only read, "
                            "never written; repeatable or comma-separated")
    board.add_argument("--check", action="store_true",
                       help="write nothing; exit 2 if the folder's LEADERBOARD.md, index.html or figures are out of "
                            "date with its records (not with --with)")

    collect = sub.add_parser("collect", help="write the records that workers settled in a shared Optuna storage")
    collect.add_argument("--storage", help="the sweep's Optuna storage (default: the journal in the work folder)")
    collect.add_argument("--results", type=_folder, default=RUNS_DIR,
                         help=f"records folder (default {RUNS_DIR}/; `--results results` publishes)")
    collect.add_argument("--force", action="store_true",
                         help="replace records made under another identity (each old record is kept in replaced/ "
                              "beside it)")
    collect.add_argument("--workdir", type=_folder, default=".harness", help="working stores (default .harness/)")

    status = sub.add_parser("status", help="where a sweep stands: trials and seeds done, running, failed, held")
    status.add_argument("--storage", help="the sweep's Optuna storage (default: the journal in the work folder)")
    status.add_argument("--results", type=_folder, default=RUNS_DIR,
                        help=f"records folder, to count the records there (default {RUNS_DIR}/)")
    status.add_argument("--workdir", type=_folder, default=".harness", help="working stores (default .harness/)")

    diagnose = sub.add_parser("diagnose", help="MI between a trained representation's parts and a task's latents")
    diagnose.add_argument("--method", required=True, type=_names, help="method name(s), comma-separated")
    diagnose.add_argument("--task", required=True, type=_names, help="task name(s) whose splits carry extras")
    diagnose.add_argument("--seed", type=_seed, default=0, help="train as the record of this seed did (default 0)")
    diagnose.add_argument("--epochs", type=_positive, help="epochs, where no record gives them (default: the task's)")
    diagnose.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="fix a hyperparameter (over the record's); repeatable")
    diagnose.add_argument("--reference", type=Path, help="CSV of a paper's values to print beside ours")
    diagnose.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    diagnose.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite in the work folder)")
    diagnose.add_argument("--data-dir", type=Path, help=f"root of downloaded datasets (or ${DATA_DIR_ENV})")
    diagnose.add_argument("--results", type=_folder, default=RUNS_DIR,
                          help=f"records folder: the seed records read, the estimates written (default {RUNS_DIR}/; "
                               "`--results results` publishes)")
    diagnose.add_argument("--workdir", type=_folder, default=".harness", help="working stores (default .harness/)")
    diagnose.add_argument("--no-progress", action="store_true", help="no progress bars")

    again = sub.add_parser("reproduce", help="rerun one record's exact configuration; old and new metrics side by side")
    again.add_argument("record", type=Path, help="a results/records/TASK/METHOD/seedK.json file")
    again.add_argument("--force", action="store_true",
                       help="rerun even when the code, data or commit no longer match the record")
    again.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    again.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite in the work folder)")
    again.add_argument("--data-dir", type=Path, help=f"root of downloaded datasets (or ${DATA_DIR_ENV})")
    again.add_argument("--workdir", type=_folder, default=".harness", help="working stores (default .harness/)")
    again.add_argument("--no-progress", action="store_true", help="no progress bars")

    listing = sub.add_parser("list", help="what is registered")
    listing.add_argument("what", choices=["methods", "tasks"], help="methods, or tasks (with whether their data "
                         "are present under --data-dir)")
    listing.add_argument("--data-dir", type=Path, help=f"root of downloaded datasets (or ${DATA_DIR_ENV})")

    data = sub.add_parser("data", help="inspect a task's data")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser,
                                   help="what to do with it")
    check = data_sub.add_parser("check", help="validate a task's data (its files, or the rows it generates) and "
                                              "print rows, shapes and class counts")
    check.add_argument("task", help="task name (see `harness list tasks`)")
    check.add_argument("--data-dir", type=Path, help=f"root of downloaded datasets (or ${DATA_DIR_ENV})")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    # Our progress lines at INFO; libraries stay at their default WARNING.
    for package in ("harness", "methods", "tasks"):
        logging.getLogger(package).setLevel(logging.INFO)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            from harness.cli.resumed import recorded_pairs, report_recorded

            run_request = RunRequest.from_args(args, _data_dir(args.data_dir))
            check_ranks(run_request)
            # Under torchrun every rank goes on to the group, which rank 0 alone decides for.
            recorded = recorded_pairs(run_request) if run_request.world_size == 1 or run_request.launches else None
            if recorded is not None:  # nothing to train: answered without importing torch
                return report_recorded(run_request, recorded)
            if run_request.launches:
                from harness.cli.launch import launch

                return launch(run_request.nproc, sys.argv[1:] if argv is None else argv)
            preemption.clear()
            with preemption.handling_signals():
                if run_request.world_size > 1:  # one rank of a data-parallel command
                    from harness.cli.ranks import run_as_rank

                    return run_as_rank(run_request)
                from harness.cli.commands import run_command

                return run_command(run_request)
        if args.command == "diagnose":
            from harness.cli.commands import diagnose_command

            return diagnose_command(DiagnoseRequest.from_args(args, _data_dir(args.data_dir)))
        if args.command == "reproduce":
            from harness.cli.reproduce import reproduce_command

            return reproduce_command(ReproduceRequest.from_args(args, _data_dir(args.data_dir)))
        if args.command == "collect":
            from harness.cli.commands import collect_command

            return collect_command(args.storage, args.workdir, args.results, force=args.force)
        if args.command == "status":
            from harness.cli.status import status_command

            return status_command(args.storage, args.workdir, args.results)
        if args.command == "leaderboard":
            from harness.cli.leaderboard import leaderboard_command

            return leaderboard_command(args.results, check=args.check,
                                       overlays=[p for given in args.overlays for p in given])
        if args.command == "data":
            from harness.api.catalog import TASKS

            TASKS.require(args.task)  # a misspelt name fails here, before the check's imports load torch
            from harness.cli.commands import data_check_command

            return data_check_command(args.task, _data_dir(args.data_dir))
        from harness.cli.listing import list_command

        return list_command(args.what, _data_dir(args.data_dir))
    except HarnessError as exc:
        # One line even when the message quotes input that holds line breaks.
        _say_error("error: " + " ".join(str(exc).splitlines()))
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130
    except preemption.Preempted as exc:
        _say_error(f"preempted (SIGTERM or SIGUSR1): {exc}; run the same command again to resume")
        return preemption.EXIT_CODE


def _say_error(line: str) -> None:
    """On stderr; a rank that `harness run --nproc` started leaves it to the launcher, which says one line."""
    from harness.cli.launch import rank_error_file

    where = rank_error_file()
    if where is None:
        print(line, file=sys.stderr)
    else:
        where.write_text(line + "\n")


def check_ranks(run: RunRequest) -> None:
    """Data parallelism combines with nothing that would start processes or ranks twice."""
    if run.nproc > 1 and "WORLD_SIZE" in os.environ:
        raise HarnessError("--nproc starts the ranks itself; under torchrun, leave it out (torchrun's "
                           "--nproc-per-node says how many)")
    pinned = [(flag, name) for flag, names in (("--device", (run.device,)), ("--devices", run.devices))
              for name in names if name.startswith("cuda:")]
    if run.world_size > 1 and pinned:
        flag, name = pinned[0]
        raise HarnessError(f"{flag} {name} would put every data-parallel rank on that one GPU; each rank takes the "
                           f"GPU its LOCAL_RANK names: pass --device cuda (or auto), and choose the GPUs with "
                           f"CUDA_VISIBLE_DEVICES")
    if run.world_size > 1 and run.workers > 1:
        raise HarnessError("--workers and data-parallel ranks do not combine: a data-parallel run is one worker "
                           "of the sweep; start more such runs against the same --storage instead "
                           "(docs/distributed.md)")


def _data_dir(given: Path | None) -> Path | None:
    if given is not None:
        path = given
    elif os.environ.get(DATA_DIR_ENV):
        path = Path(os.environ[DATA_DIR_ENV])
    else:
        return None
    if not path.is_dir():
        raise HarnessError(f"data directory {path} does not exist; create it or pass an existing --data-dir")
    return path


if __name__ == "__main__":
    sys.exit(main())
