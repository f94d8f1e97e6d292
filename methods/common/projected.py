"""A base for methods that contrast per-modality projections of per-modality embeddings."""

import torch
from torch import nn

from harness.api.method import Method
from harness.api.space import POSITIVE, SIZE, Choice, Float
from methods.common.encoders import ModalityEncoders, projection_head


class ProjectedModalities(Method):
    """One encoder and one projection head per modality; the probe sees the embeddings before the heads.

    One head per modality: modalities differ, and a shared head would have to undo that too.
    """

    search_space = {"temperature": Float(0.05, 0.5, log=True), "embed_dim": Choice((64, 128, 256))}
    defaults = {"temperature": 0.1, "embed_dim": 128, "projection_dim": 128}
    domains = {"temperature": POSITIVE, "embed_dim": SIZE, "projection_dim": SIZE}

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        embed = int(hparams["embed_dim"])
        self.encoders = ModalityEncoders(task, embed)
        self.projectors = nn.ModuleDict({m: projection_head(embed, int(hparams["projection_dim"]))
                                         for m in self.encoders})

    def project(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.projectors[m](z) for m, z in self.encoders(inputs).items()}

    def parts(self, inputs):
        """Each modality's embedding, for diagnostics (harness.results.diagnostics)."""
        return self.encoders.parts(inputs)

    def encode(self, inputs):
        return self.encoders.joint(inputs)
