"""Benchmark harness for multimodal and self-supervised contrastive representation learning."""

__version__ = "0.2.0"
