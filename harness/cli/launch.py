"""`harness run --nproc N`: the same command started as N ranks through torchrun's launcher, on this machine.

What `torchrun --standalone --nproc-per-node N -m harness run ...` does, with the harness's manners:
the ranks share the CPU's cores (OMP_NUM_THREADS, unless set), torchrun's own log lines stay quiet,
and a run that fails ends with one line, the failing rank's: its error, or how it died.
Several machines: torchrun itself (docs/distributed.md).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from harness.running.preemption import EXIT_CODE, SIGNALS

# Where a rank started by this launcher leaves its one error line (harness.cli.app), for the launcher to say.
ERRORS_ENV = "HARNESS_RANK_ERRORS"
# What torchrun passes on to the ranks (its default list, and SIGUSR1: what Slurm's --signal sends ahead of a
# time limit, for the ranks to checkpoint); left out, SIGUSR1 would end the launcher alone, leaving the ranks.
FORWARDED = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def rank_error_file() -> Path | None:
    """The file this rank's error line goes to, when the launcher started it (and will print it)."""
    folder, rank = os.environ.get(ERRORS_ENV), os.environ.get("RANK")
    return Path(folder) / f"rank-{rank}.txt" if folder and rank is not None else None


def launch(nproc: int, argv: list[str]) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from harness.running.environment import divide_threads

    # torchrun would set one thread per rank; the ranks rather share the cores as --workers' processes do.
    os.environ.setdefault("OMP_NUM_THREADS", str(divide_threads(nproc)))
    errors = Path(tempfile.mkdtemp(prefix="harness-ranks-"))
    os.environ[ERRORS_ENV] = str(errors)
    _quiet_torchrun()
    # torchrun passes SIGTERM on to the ranks, which stop at a step's end and keep their seed; SIGUSR1 (Slurm's
    # --signal) would end this process where it stands, so it is passed on the same way.
    signal.signal(signal.SIGUSR1, _pass_on)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", f"--signals-to-handle={FORWARDED}", *_entry(),
                        *_without_nproc(argv)]))
        return 0
    except ChildFailedError as exc:
        rank, failure = min(exc.failures.items(), key=_cause_first)
        said = errors / f"rank-{rank}.txt"
        if said.exists():
            print(said.read_text().strip(), file=sys.stderr)
        elif failure.exitcode < 0:
            print(f"error: rank {rank} of {nproc} died ({failure.signal_name()}); the run stopped with it and no "
                  f"record was written for the run in progress; run the same command again to continue",
                  file=sys.stderr)
        # Otherwise the rank said what happened itself (failed pairs, a defect's traceback).
        return failure.exitcode if failure.exitcode > 0 else 1
    except SignalException as exc:
        said = errors / "rank-0.txt"
        if exc.sigval in SIGNALS and said.exists():  # rank 0 stopped at a step's end and said where its seed is
            print(said.read_text().strip(), file=sys.stderr)
            return EXIT_CODE
        return 130  # Ctrl+C reached the ranks too; rank 0 said where the run stopped
    finally:
        shutil.rmtree(errors, ignore_errors=True)


def _pass_on(signum, _frame) -> None:
    """As torchrun's own handler for SIGTERM: its agent stops and sends this signal to every rank."""
    from torch.distributed.elastic.multiprocessing.api import SignalException

    raise SignalException(f"Process {os.getpid()} got signal: {signum}", sigval=signal.Signals(signum))


def _cause_first(item) -> tuple:
    """Which failure to name: a rank killed by a signal (not torchrun's SIGTERM, which it sends the survivors
    once one rank failed) caused the others, which failed in the collective it left; then the earliest."""
    rank, failure = item
    killed = failure.exitcode < 0 and failure.signal_name() != "SIGTERM"
    return (not killed, failure.timestamp, rank)


def _entry() -> list[str]:
    """How this command was started, for the ranks to start the same way: `-m module` or the script."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is not None:
        return ["-m", spec.name.removesuffix(".__main__")]
    return [sys.argv[0]]


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def _quiet_torchrun() -> None:
    """torchrun logs each rank's failure with a traceback and a table; the launcher says it in one line."""
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
