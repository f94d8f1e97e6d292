"""Seed-0 guide quality of the guided rows on a task, as their records will carry it, without training a student.

    python benchmarks/guide_quality.py --task shapes-superclasses cgs-add-new-positive cgs-oracle-add-new-positive

Each method is built with its defaults (and the task's batch size), seeded as `harness run` seeds seed 0, and
prepared: its guide is trained (CLIP, the image-only SimCLR guide) or built (the oracles) and measured. Prints
each guide's check line and the seconds it took.
"""

from __future__ import annotations

import argparse
import time

from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="+")
    parser.add_argument("--task", default="shapes-superclasses")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    task = TASKS.get(args.task)()
    train = task.load().train
    for name in args.methods:
        cls = METHODS.get(name)
        started = time.perf_counter()
        seed_everything(args.seed)
        method = cls(task, cls.defaults | {"batch_size": task.default_batch_size})
        method.prepare(train)
        for check in method.check_assumptions([]):
            state = "held" if check.held else "FAILED"
            print(f"{name}: {check.value:.4f} {state}: {check.detail} ({time.perf_counter() - started:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
