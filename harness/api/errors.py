"""Errors the command line turns into one line and exit code 2."""


class HarnessError(Exception):
    """A problem the user can fix. The message names the problem and the fix."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss; the run fails alone and the sweep goes on."""


class RunFailed(RuntimeError):
    """A (task, method) pair could not produce a result; other pairs still run."""
