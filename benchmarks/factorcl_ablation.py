"""FactorCL ablations on a reduced setting: one training run, its validation probe and its critics' health.

Not a pytest suite: a script behind the reduced-setting ablation table of the version 1-4
analysis (`git show 5dfef6c:results/FACTORCL_ANALYSIS.md`). It trains
one FactorCL variant on the first `--rows` training rows (evenly spaced) through the harness's own
training loop, scores the validation split with the harness's linear probe, and prints one JSON
line: the hyperparameters, the validation accuracy, each CLUB critic's per-epoch InfoNCE, the
assumption checks and the wall time. `--drop TERM` zeroes one term of the objective (it is still
computed and logged), to see which term an effect comes from.

    OMP_NUM_THREADS=1 python -m benchmarks.factorcl_ablation --method factorcl-ssl --rows 8000 \\
        --epochs 2 --seed 0 --set lr=1.5e-3 --set club_steps=1
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from harness.api.catalog import METHODS, TASKS
from harness.api.space import typed_overrides
from harness.running import environment, probe
from harness.running.request import TRAIN_DEFAULTS
from harness.running.train import TrainConfig, extract_features, fit

CRITIC_KEYS = ("train_shared_club_critic_nce", "train_unique_club_critic_nce")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--task", default="synthetic")
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--drop", action="append", default=[], metavar="TERM")
    args = parser.parse_args()

    task, cls = TASKS.get(args.task)(), METHODS.get(args.method)
    defaults = {**TRAIN_DEFAULTS, "batch_size": task.default_batch_size, **cls.defaults}
    space = {**cls.search_space}
    overrides = dict(item.split("=", 1) for item in args.set)
    hparams = defaults | typed_overrides(overrides, space, defaults)
    data = task.load()
    train = data.train.subset(args.rows)
    generator = environment.seed_everything(args.seed)
    method = cls(task, hparams)
    if args.drop:
        _drop_terms(method, args.drop)
    started = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, batch_size=int(hparams["batch_size"]), lr=float(hparams["lr"]),
                         weight_decay=float(hparams["weight_decay"]), device=torch.device("cpu"), progress=False)
    history = fit(method, _with_train(data, train), config, generator).history if args.epochs else []
    scores = probe.linear_probe(extract_features(method, train, torch.device("cpu")),
                                extract_features(method, data.val, torch.device("cpu")))
    checks = method.check_assumptions(history)
    print(json.dumps({
        "method": args.method, "rows": args.rows, "epochs": args.epochs, "seed": args.seed, "drop": args.drop,
        "set": overrides, "val_acc": round(scores.val_acc, 4),
        "critic_nce": {key.removeprefix("train_"): [round(e[key], 3) for e in history] for key in CRITIC_KEYS},
        "terms": {k.removeprefix("train_"): round(v, 3) for k, v in (history[-1] if history else {}).items()},
        "checks_held": all(c.held for c in checks), "wall_s": round(time.perf_counter() - started, 1),
    }))


def _drop_terms(method, dropped: list[str]) -> None:
    terms = method.terms

    def without(batch):
        out = terms(batch)
        unknown = set(dropped) - set(out)
        if unknown:
            raise SystemExit(f"--drop: no term {sorted(unknown)}; terms are {sorted(out)}")
        return {k: v.detach() * 0 if k in dropped else v for k, v in out.items()}

    method.terms = without


def _with_train(data, train):
    return replace(data, train=train)


if __name__ == "__main__":
    main()
