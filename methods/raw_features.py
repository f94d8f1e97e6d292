"""Reference row: the linear probe on the raw inputs, flattened and concatenated."""

import torch

from harness.api.method import Method


class RawFeatures(Method):
    name = "raw-features"
    display_name = "Raw features"
    description = "Probe on the raw inputs; what any representation must beat."
    trains = False

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([inputs[m.name].flatten(1).float() for m in self.task.modalities], dim=1)
