"""`python -m tests.mutation [MODULE ...]`: mutmut over each planned module, then a table of the outcomes.

Exit code 0 when every surviving mutant is listed as equivalent in its module's plan and every listed one
survives; 1 when a survivor is unexplained, an entry is stale, or mutmut gives no verdict; 2 on bad input.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from harness.api.errors import HarnessError
from tests.mutation.plan import ROOT, Module, select
from tests.mutation.run import MutmutFailed, diff, mutate, mutmut_command, scratch_dir
from tests.mutation.score import Score, exit_code, score, table


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE",
                        help="dotted names or paths of planned modules (default: every tests/mutation/*.toml)")
    parser.add_argument("--max-children", type=int, default=1,
                        help="mutants tested at once (default 1: each runs its tests on one core)")
    parser.add_argument("--keep", action="store_true",
                        help="keep each module's scratch copy, where `mutmut show NAME` shows a mutant")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # the tests' own repository
    return parser.parse_args(argv)


def mutate_and_score(module: Module, root: Path, max_children: int, keep: bool) -> Score:
    scratch = scratch_dir()
    print(f"{module.path}: mutmut against {', '.join(module.tests)} in {scratch}", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        result = score(module, mutate(module, root, max_children, scratch))
    except HarnessError:
        shutil.rmtree(scratch)
        raise
    print(f"{module.path}: {result.mutants} mutants in {time.monotonic() - start:.0f} s", file=sys.stderr)
    for name in result.survivors:
        print(diff(name, scratch) + "\n")
    if keep:
        print(f"{module.path}: the scratch copy stays at {scratch}", file=sys.stderr)
    else:
        shutil.rmtree(scratch)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = args.root.resolve()
    scores = []
    try:
        if args.max_children < 1:
            raise HarnessError(f"--max-children {args.max_children}: give at least 1")
        modules = select(args.modules, root)
        mutmut_command()
        for module in modules:
            scores.append(mutate_and_score(module, root, args.max_children, args.keep))
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except MutmutFailed as error:
        print(error, file=sys.stderr)
        return 1
    print(table(scores))
    return exit_code(scores)


if __name__ == "__main__":
    sys.exit(main())
