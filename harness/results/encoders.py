"""Which records share a trained encoder, decided by `encoder_key` alone. Imports no torch.

A method that never reads labels trains the same encoder on tasks that declare the same inputs and views
(`Task.inputs_of`), so its records on those tasks are one piece of evidence probed several ways, not
several. Each record made since schema 3 carries `encoder`, a digest of its key computed when it was
trained; `encoder_of` computes the same digest for an older record from what the code says now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from harness.results.identity import identity_digest
from harness.results.records import Record

if TYPE_CHECKING:  # torch: only for the names; the leaderboard never imports it
    from harness.api.method import Method
    from harness.api.task import Task


@dataclass(frozen=True)
class EncoderFacts:
    """What the code says about sharing: which methods train on labels, and which tasks train on another
    task's inputs and views unchanged (read without torch by harness.cli.encoder_facts; at run time from
    the method and task that trained)."""

    reads_labels: Mapping[str, bool] = field(default_factory=dict)  # method name -> Requirements.needs_labels
    inputs_of: Mapping[str, str] = field(default_factory=dict)  # task name -> the task whose inputs it shares


def facts_of(method: type[Method] | Method, task: Task) -> EncoderFacts:
    """The facts of one method and one task, from their classes as the index reads them: what a run stores
    its record's `encoder` by."""
    return EncoderFacts({method.name: bool(method.requirements.needs_labels)},
                        {task.name: task.inputs_of} if task.inputs_of else {})


def encoder_key(record: Record, facts: EncoderFacts) -> tuple:
    """Two records share a trained encoder when their keys are equal.

    The encoder is fixed by the method (name, version), its hyperparameters, the seed, the epochs and batch
    size, and what training read of the task. A method that never reads labels reads only the inputs and
    views, so tasks declaring the same inputs (`Task.inputs_of`) give it one encoder; a method that reads
    labels, or one the code does not describe (an uninstalled plugin), trains one encoder per task."""
    task = record.task["name"]
    reads_labels = facts.reads_labels.get(record.method["name"], True)
    trained_on = task if reads_labels else facts.inputs_of.get(task, task)
    return (record.method["name"], record.method.get("version"), trained_on, json.dumps(record.hparams,
            sort_keys=True), record.seed, record.protocol.get("epochs"), record.protocol.get("batch_size"))


def encoder_digest(record: Record, facts: EncoderFacts) -> str:
    """12 hex digits naming the record's trained encoder: what a new record stores as `encoder`."""
    return identity_digest({"encoder": encoder_key(record, facts)})


def encoder_of(record: Record, facts: EncoderFacts) -> str:
    """The record's trained encoder: as recorded when it was trained, else computed now (a record of schema 2
    or older, made before records carried it)."""
    return record.encoder or encoder_digest(record, facts)
