"""SupCon: supervised contrastive learning (Khosla et al. 2020) with the modalities as views.

Every modality of a sample is one view; each view's positives are all other
views, of any modality, whose sample has the same label. So the loss both
aligns a sample's modalities and pulls a class together. The probe sees the
modality embeddings side by side, before the projection heads.
"""

import torch

from harness.api.distributed import gather
from harness.api.method import Requirements
from methods.common.losses import supcon
from methods.common.projected import ProjectedModalities


class SupCon(ProjectedModalities):
    name = "supcon"
    display_name = "SupCon"
    description = "Supervised contrastive loss over all modalities' embeddings; same label = positive."
    requirements = Requirements(min_modalities=2, needs_labels=True)

    def loss(self, batch):
        projected = self.project(batch.inputs)
        views = torch.cat([gather(z) for z in projected.values()])  # the global batch's rows, modality by modality
        labels = gather(batch.labels).repeat(len(projected))
        return supcon(views, labels, float(self.hparams["temperature"]))
