"""Reference row: the task's default encoders at random initialization, never trained."""

import torch

from harness.api.method import Method
from harness.api.space import SIZE
from methods.common.encoders import ModalityEncoders


class Untrained(Method):
    name = "untrained"
    display_name = "Untrained encoders"
    description = "Probe on randomly initialized default encoders; what training must add to."
    trains = False
    defaults = {"embed_dim": 128}
    domains = {"embed_dim": SIZE}

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoders = ModalityEncoders(task, int(hparams["embed_dim"]))

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoders.joint(inputs)
