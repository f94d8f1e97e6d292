"""SupCon: supervised contrastive learning (Khosla et al. 2020) with the modalities as views.

Every modality of a sample is one view; each view's positives are all other
views, of any modality, whose sample has the same label. So the loss both
aligns a sample's modalities and pulls a class together. The probe sees the
modality embeddings side by side, before the projection heads.
"""

import torch

from harness.method import Requirements
from harness.space import Choice, Float
from methods.common.projected import ProjectedModalities
from methods.common.losses import supcon


class SupCon(ProjectedModalities):
    name = "supcon"
    display_name = "SupCon"
    description = "Supervised contrastive loss over all modalities' embeddings; same label = positive."
    requirements = Requirements(min_modalities=2, needs_labels=True)
    search_space = {"temperature": Float(0.05, 0.5, log=True), "embed_dim": Choice((64, 128, 256))}
    defaults = {"temperature": 0.1, "embed_dim": 128, "projection_dim": 128}

    def loss(self, batch):
        projected = self.project(batch.inputs)
        views = torch.cat(list(projected.values()))
        labels = batch.labels.repeat(len(projected))
        return supcon(views, labels, float(self.hparams["temperature"]))
