"""`harness data check`: load a task's data (its files, or the rows it generates), validate what came out,
and say what was found.

The task's loader validates its own files (keys, shapes, label values) and
names the file when something is wrong; this adds the checks every task
shares: the data are there, each split is non-empty, inputs have the shapes
the task declares and finite values, labels lie in 0..num_classes-1, and the
training split holds every class.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from harness.api.errors import HarnessError
from harness.api.task import Split, Task
from harness.running.pair import check_data

SPLITS = ("train", "val", "test")
SCAN_BATCH = 1024


@dataclass
class SplitSummary:
    rows: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    classes: Counter = field(default_factory=Counter)


def summarize(task: Task, name: str, split: Split) -> SplitSummary:
    summary = SplitSummary()
    for inputs, labels, _ in split.batches(SCAN_BATCH):
        summary.rows += len(labels)
        summary.classes.update(labels.tolist())
        for modality in task.modalities:
            x = inputs[modality.name]
            summary.shapes[modality.name] = tuple(x.shape[1:])
            summary.dtypes[modality.name] = str(x.dtype).removeprefix("torch.")
            if x.is_floating_point() and not torch.isfinite(x).all():
                raise HarnessError(f"task {task.name}: split {name}, modality {modality.name} has non-finite values")
    return summary


def validate(task: Task, name: str, summary: SplitSummary) -> None:
    if summary.rows == 0:
        raise HarnessError(f"task {task.name}: split {name} is empty")
    for modality in task.modalities:
        if summary.shapes[modality.name] != tuple(modality.shape):
            raise HarnessError(f"task {task.name}: split {name}, modality {modality.name} has rows of shape "
                               f"{summary.shapes[modality.name]}, but the task declares {tuple(modality.shape)}")
    outside = sorted(c for c in summary.classes if not 0 <= c < task.num_classes)
    if outside:
        raise HarnessError(f"task {task.name}: split {name} has labels {outside} outside 0..{task.num_classes - 1}")
    if name == "train":
        absent = [c for c in range(task.num_classes) if summary.classes[c] == 0]
        if absent:
            raise HarnessError(f"task {task.name}: class(es) {absent} never occur in the training split; "
                               f"a probe cannot learn them")


def check_task(task: Task) -> dict[str, SplitSummary]:
    check_data(task)
    data = task.load()
    summaries = {}
    for name in SPLITS:
        summaries[name] = summarize(task, name, getattr(data, name))
        validate(task, name, summaries[name])
    return summaries


def report_lines(task: Task, summaries: dict[str, SplitSummary]) -> list[str]:
    """What `harness data check` prints: where the data are, one line per split, the verdict."""
    lines = [f"task {task.name} ({task.description})", f"data: {_where(task)}"]
    for name, s in summaries.items():
        shapes = ", ".join(f"{m}{list(s.shapes[m])} {s.dtypes[m]}" for m in s.shapes)
        counts = " ".join(f"{c}:{s.classes[c]}" for c in range(task.num_classes))
        majority = max(s.classes.values()) / s.rows
        lines.append(f"  {name:<5} {s.rows:>7} rows | {shapes} | classes {counts} (majority {majority:.1%})")
    total = sum((s.classes for s in summaries.values()), Counter())
    counts = " ".join(f"{c}:{total[c]}" for c in range(task.num_classes))
    lines.append(f"  {'all':<5} {total.total():>7} rows | classes {counts}")
    if task.source.kind == "files":  # the loader checked each file's keys and dtypes; this, what every task shares
        lines.append("ok: files, keys, shapes, dtypes and labels as expected")
    else:
        lines.append(f"ok: no split empty, shapes as declared, values finite, labels in 0..{task.num_classes - 1}, "
                     "every class in train")
    return lines


def _where(task: Task) -> str:
    """Where the rows above came from, in the words of the task's declared source."""
    if task.source.kind == "files":
        return str(task.data_dir)
    if task.source.kind == "generated":
        return "generated in memory by the task's code (no files to read or check)"
    return "bundled with the task's code (no data folder needed)"
