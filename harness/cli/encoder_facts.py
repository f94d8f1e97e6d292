"""What the code says about shared encoders, for the claims' counts, read from the index without torch."""

from __future__ import annotations

from harness.cli import index
from harness.results.encoders import EncoderFacts


def encoder_facts() -> EncoderFacts:
    """Every registered method's `needs_labels` and every task's declared `inputs_of` (harness.api.task)."""
    reads = {name: bool(index.method_info(name)["requirements"]["needs_labels"]) for name in index.method_names()}
    shares = {name: info["inputs_of"] for name in index.task_names()
              if (info := index.task_info(name)).get("inputs_of")}
    return EncoderFacts(reads, shares)
