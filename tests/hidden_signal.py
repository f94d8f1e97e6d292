"""A test task whose label a contrastive method must learn and an untrained encoder cannot see.

One label-carrying latent z ~ N(0, 1) hides among NUISANCE_DIM nuisance coordinates n ~ N(0, NUISANCE_SD^2 I),
the whole turned by a fixed random rotation Q (so no input axis, which Adam's per-coordinate steps would favour,
carries z): x = [z, n] Q^T. The label is 1[z > 0]. An augmentation keeps z and redraws n, so two views of a row
share z and nothing else: the population optimum of InfoNCE between views encodes z (it is all the views share)
and no nuisance. The modality names the "linear" encoder family, registered here: an untrained encoder is then a
random linear map, whose best read-out of z has a closed form (tests/test_above_untrained.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.api.task import Modality, Task, TaskData, TensorSplit
from methods.common.encoders import encoder_family

NUISANCE_DIM = 400
NUISANCE_SD = 1.0
ROWS = {"train": 2000, "val": 1000, "test": 2000}

# A random linear map when untrained: the family whose best read-out the test can bound in closed form.
encoder_family("linear")(lambda modality, dim: nn.Sequential(nn.Flatten(), nn.Linear(math.prod(modality.shape), dim)))


class HiddenSignal(Task):
    name = "hidden-signal"
    suite = "tests"
    description = f"One label-carrying latent among {NUISANCE_DIM} nuisance dims; views redraw the nuisance."
    default_epochs = 3
    default_batch_size = 256

    def __init__(self, data_dir=None, **params):
        super().__init__(data_dir, **params)
        self.rotation = torch.linalg.qr(torch.randn(NUISANCE_DIM + 1, NUISANCE_DIM + 1,
                                                    generator=torch.Generator().manual_seed(0)))[0]

    @property
    def modalities(self):
        return (Modality("x", "tabular", (NUISANCE_DIM + 1,), encoder="linear"),)

    @property
    def num_classes(self):
        return 2

    def inputs(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        nuisance = NUISANCE_SD * torch.randn(len(z), NUISANCE_DIM, generator=generator)
        return torch.cat([z[:, None], nuisance], dim=1) @ self.rotation.T

    def load(self) -> TaskData:
        g = torch.Generator().manual_seed(1)

        def split(n: int) -> TensorSplit:
            z = torch.randn(n, generator=g)
            return TensorSplit({"x": self.inputs(z, g)}, (z > 0).long(), {"z": z})

        return TaskData(*(split(n) for n in ROWS.values()))

    def augment(self, modality, x):
        # The rotation is orthogonal: x Q recovers [z, n]; z is kept and n redrawn from torch's seeded RNG.
        return self.inputs((x @ self.rotation)[:, 0])
