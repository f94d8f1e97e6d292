"""SupCon: supervised contrastive learning (Khosla et al. 2020) with the modalities as views.

Every modality of a sample is one view; each view's positives are all other
views, of any modality, whose sample has the same label. So the loss both
aligns a sample's modalities and pulls a class together. The probe sees the
modality embeddings side by side, before the projection heads.
"""

import torch
from torch import nn

from harness.method import Method, Requirements
from harness.space import Choice, Float
from methods.common.encoders import ModalityEncoders, mlp
from methods.common.losses import supcon


class SupCon(Method):
    name = "supcon"
    display_name = "SupCon"
    description = "Supervised contrastive loss over all modalities' embeddings; same label = positive."
    requirements = Requirements(min_modalities=2, needs_labels=True)
    search_space = {"temperature": Float(0.05, 0.5, log=True), "embed_dim": Choice((64, 128, 256))}
    defaults = {"temperature": 0.1, "embed_dim": 128, "projection_dim": 128}

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        embed = int(hparams["embed_dim"])
        self.encoders = ModalityEncoders(task, embed)
        # One head per modality: modalities differ, and a shared head would have to undo that too.
        self.projectors = nn.ModuleDict({m: mlp([embed, embed, int(hparams["projection_dim"])])
                                         for m in self.encoders})

    def loss(self, batch):
        embeddings = self.encoders(batch.inputs)
        views = torch.cat([self.projectors[m](z) for m, z in embeddings.items()])
        labels = batch.labels.repeat(len(embeddings))
        return supcon(views, labels, float(self.hparams["temperature"]))

    def parts(self, inputs):
        """Each modality's embedding, for diagnostics (harness.diagnostics)."""
        return self.encoders.parts(inputs)

    def encode(self, inputs):
        return self.encoders.joint(inputs)
