"""How much a learned representation knows about per-row side variables, in bits.

For a task whose splits carry side variables in `split.extras` (for instance the
latents a synthetic generator drew), this estimates I(Z; W) between each part Z
of a trained method's representation and each side variable W, as in FactorCL's
Table 1. A method may name the parts of its representation with
`parts(inputs) -> {name: tensor}`; otherwise its whole `encode` output is "Z".

The estimator is a probabilistic classifier between paired samples (z_i, w_i)
and shuffled ones (z_i, w_j). With as many of each, its logit estimates
log p(z, w) / (p(z) p(w)), and the mean logit over held-out paired rows
estimates I(Z; W). It trains on the training split and is read on the test
split, so an overfitted classifier shows up as a smaller estimate, not a larger.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from harness.api.errors import HarnessError
from harness.api.method import Method
from harness.api.registry import Registry
from harness.api.task import Split, Task, TaskData
from harness.results.encoders import EncoderFacts, encoder_of
from harness.results.records import read_record
from harness.results.publishing.figures import reference_column as _reference_column

log = logging.getLogger(__name__)
DIAGNOSTICS_DIR = "diagnostics"
TABLE_FILE = "MI_DIAGNOSTICS.md"


@dataclass(frozen=True)
class ClassifierMI:
    """The classifier estimator's settings."""

    hidden: int = 256
    epochs: int = 20
    batch_size: int = 512
    lr: float = 1e-3
    max_train_rows: int = 12000
    seed: int = 0

    def bits(self, z_train: torch.Tensor, w_train: torch.Tensor, z_test: torch.Tensor, w_test: torch.Tensor) -> float:
        """I(Z; W) in bits: a classifier trained to tell paired from shuffled rows, read on held-out rows."""
        generator = torch.Generator().manual_seed(self.seed)
        z_train, z_test = _standardized(z_train, z_test)
        w_train, w_test = _standardized(w_train, w_test)
        if len(z_train) > self.max_train_rows:
            rows = torch.randperm(len(z_train), generator=generator)[: self.max_train_rows]
            z_train, w_train = z_train[rows], w_train[rows]
        torch.manual_seed(self.seed)
        classifier = nn.Sequential(nn.Linear(z_train.shape[1] + w_train.shape[1], self.hidden), nn.ReLU(),
                                   nn.Linear(self.hidden, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))
        optimizer = torch.optim.Adam(classifier.parameters(), lr=self.lr)
        for _ in range(self.epochs):
            for z, w, w_other in _epoch(z_train, w_train, self.batch_size, generator):
                logits = classifier(torch.cat([torch.cat([z, w], 1), torch.cat([z, w_other], 1)])).squeeze(1)
                targets = torch.cat([torch.ones(len(z)), torch.zeros(len(z))])
                loss = F.binary_cross_entropy_with_logits(logits, targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            nats = classifier(torch.cat([z_test, w_test], 1)).mean().item()
        return nats / math.log(2)


def _standardized(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    train, test = train.float().flatten(1), test.float().flatten(1)
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return (train - mean) / std, (test - mean) / std


def _epoch(z: torch.Tensor, w: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Batches of (z, its own w, another row's w); the other rows are a fresh permutation each epoch."""
    order, other = torch.randperm(len(z), generator=generator), torch.randperm(len(z), generator=generator)
    for start in range(0, len(z), batch_size):
        rows = order[start : start + batch_size]
        yield z[rows], w[rows], w[other[start : start + batch_size]]


@torch.no_grad()
def representation_parts(method: Method, split: Split, device: torch.device) -> dict[str, torch.Tensor]:
    """Each named part of the method's frozen representation over a whole split, in row order."""
    method.to(device)
    method.eval()
    parts_of = getattr(method, "parts", None) or (lambda inputs: {"Z": method.encode(inputs)})
    chunks: dict[str, list[torch.Tensor]] = {}
    for inputs, _labels, _rows in split.batches(1024):
        for name, value in parts_of({k: v.to(device) for k, v in inputs.items()}).items():
            chunks.setdefault(name, []).append(value.float().cpu())
    return {name: torch.cat(values) for name, values in chunks.items()}


@dataclass(frozen=True)
class MIRow:
    part: str
    extra: str
    bits: float


def check_side_variables(tasks: list[Task], registry: Registry) -> None:
    """Refuse, before any training, a task that declares no side variables, naming the tasks that do."""
    lacking = [task.name for task in tasks if not task.extra_symbols]
    if lacking:
        having = [name for name in registry.names() if registry.get(name).extra_symbols]
        raise HarnessError(f"task {lacking[0]} carries no per-row side variables to measure a representation "
                           f"against; `diagnose` needs a task that does: {', '.join(having) or 'none registered'}")


def estimate(method: Method, data: TaskData, device: torch.device, estimator: ClassifierMI) -> list[MIRow]:
    """I(part; extra) in bits for every part of the representation and every side variable of the task."""
    if not data.train.extras:
        raise ValueError(f"task {method.task.name} carries no per-row side variables to measure against")
    train, test = representation_parts(method, data.train, device), representation_parts(method, data.test, device)
    rows = []
    for part in train:
        for extra in data.train.extras:
            bits = estimator.bits(train[part], data.train.extras[extra], test[part], data.test.extras[extra])
            log.info("%s/%s: I(%s; %s) = %.2f bits", method.task.name, method.name, part, extra, bits)
            rows.append(MIRow(part, extra, bits))
    return rows


# -- files and tables ------------------------------------------------------------------------------


def write_result(results: Path, task: str, method: dict, protocol: dict, rows: list[MIRow],
                 symbols: dict[str, str]) -> Path:
    path = Path(results) / DIAGNOSTICS_DIR / task / f"{method['name']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"task": task, "method": method, "protocol": protocol, "symbols": symbols,
               "estimates_bits": [asdict(r) for r in rows]}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def render_table(results: Path, reference: Path | None = None, facts: EncoderFacts = EncoderFacts()) -> str:
    """Markdown: one row per (task, method, part), our estimates beside the paper's where it reports them.

    A section whose diagnosed encoder is one an earlier section measured (the same record configuration and
    seed, on a task sharing its inputs, for a method that never reads labels: harness.results.encoders, with
    `facts` for records that do not name their encoder) says so, and the header counts distinct encoders.
    A damaged result file or reference table is one HarnessError naming it; `diagnose` renders once before
    training, so it finds them before any work.
    """
    paper = read_reference(reference) if reference else None
    lines = ["# Mutual information between representations and latents (bits)", "",
             "Generated by `harness diagnose`; estimator: a probabilistic classifier between paired and "
             "shuffled (Z, w) rows, trained on the training split and read on the test split.", ""]
    if paper is not None:
        lines += [f"Paper values: {reference.name}, as reported in the paper on its own synthetic setting, "
                  "not reproduced here.", ""]
    sections, measured = [], {}
    paths = sorted((Path(results) / DIAGNOSTICS_DIR).glob("*/*.json"))
    for path in paths:
        try:
            found = json.loads(path.read_bytes())
            section = _section(found, paper)
            heading = f"{found['task']} / {found['method']['display_name']}"
            encoder = _diagnosed_encoder(Path(results), found, facts) or str(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # JSON errors are ValueErrors
            raise HarnessError(f"{path}: not a diagnostics result ({type(exc).__name__}: {exc}); run `harness "
                               f"diagnose` for it again or delete the file") from None
        if encoder in measured:
            section[2:2] = [f"The same trained encoder as {measured[encoder]} (a method that never reads labels "
                            "trains one encoder for tasks that share their inputs, `Task.inputs_of`): a second "
                            "estimate on one encoder, not a second encoder.", ""]
        measured.setdefault(encoder, heading)
        sections += section
    if len(paths) != len(measured):
        lines += [f"{len(paths)} diagnosed (task, method) pairs of {len(measured)} distinct trained encoders.", ""]
    return "\n".join(lines + sections)


def _diagnosed_encoder(results: Path, found: dict, facts: EncoderFacts) -> str | None:
    """The encoder of the record a diagnosis retrained (its configuration and seed), or None where it took
    defaults or the record is gone."""
    source = found["protocol"].get("hparams_from")
    path = results / source if source and source != "defaults" else None
    return encoder_of(read_record(path), facts) if path and path.exists() else None


def read_reference(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, comment="#").set_index("latent")
    except (OSError, ValueError, KeyError) as exc:  # pandas' parser errors are ValueErrors
        raise HarnessError(f"--reference {path}: not a CSV of the paper's values with a 'latent' column "
                           f"({type(exc).__name__}: {exc}); give one like "
                           f"results/reference/factorcl_table1_mi_bits.csv") from None


def _section(found: dict, paper: pd.DataFrame | None) -> list[str]:
    symbols = found["symbols"]
    extras = list(dict.fromkeys(r["extra"] for r in found["estimates_bits"]))
    headers = ["part"] + [f"I(Z; {symbols.get(e, e)})" for e in extras]
    if paper is not None:
        headers += [f"paper I(Z; {symbols.get(e, e)})" for e in extras]
    table = []
    for part in dict.fromkeys(r["part"] for r in found["estimates_bits"]):
        bits = {r["extra"]: r["bits"] for r in found["estimates_bits"] if r["part"] == part}
        row = [part] + [f"{bits[e]:.2f}" for e in extras]
        if paper is not None:
            column = _reference_column(found["method"]["display_name"], part, paper.columns)
            row += [_paper_value(paper, column, symbols.get(e, e)) for e in extras]
        table.append(row)
    protocol = ", ".join(f"{k} {v}" for k, v in sorted(found["protocol"].items()))
    return [f"## {found['task']} / {found['method']['display_name']}", "", f"Protocol: {protocol}.", "",
            tabulate(table, headers=headers, tablefmt="github"), ""]


def _paper_value(paper: pd.DataFrame, column: str | None, symbol: str) -> str:
    if column is None or symbol not in paper.index:
        return "-"
    value = paper.loc[symbol, column]
    return "-" if pd.isna(value) else f"{float(value):.2f}"


def numeric_summary(rows: list[MIRow]) -> dict[str, float]:
    """Metric names for MLflow: mi_bits.<part>.<extra>."""
    return {f"mi_bits.{r.part}.{r.extra}": float(np.round(r.bits, 4)) for r in rows}
