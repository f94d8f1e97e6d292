"""Cross+Self: cross-modal contrastive learning plus within-modality augmentation contrast.

The objective pairs I(X1; X2) with I(X1; X1') and I(X2; X2'): a symmetric
InfoNCE between the two modalities' embeddings, and for each modality an
NT-Xent between two augmented views of it (SimCLR within the modality). The
three terms are summed with equal weight. The probe sees the modality
embeddings side by side, before the projection heads.
"""

import itertools

import torch

from harness.api.distributed import gather
from harness.api.method import Requirements
from methods.common.losses import nt_xent, symmetric_info_nce
from methods.common.projected import ProjectedModalities


class CrossSelf(ProjectedModalities):
    name = "cross-self"
    display_name = "Cross+Self"
    description = "Cross-modal InfoNCE plus, per modality, NT-Xent between two augmentations."
    requirements = Requirements(min_modalities=2, needs_augmentations=True)

    def loss(self, batch):
        temperature = float(self.hparams["temperature"])
        clean = self._gathered(batch.inputs)
        cross = torch.stack([symmetric_info_nce(clean[a], clean[b], 1 / temperature)
                             for a, b in itertools.combinations(clean, 2)]).mean()
        first, second = self._gathered(batch.views()), self._gathered(batch.views())
        self_terms = {m: nt_xent(first[m], second[m], temperature) for m in clean}
        total = cross + sum(self_terms.values())
        return {"loss": total, "cross": cross.detach(), **{f"self_{m}": v.detach() for m, v in self_terms.items()}}

    def _gathered(self, inputs):
        """Each modality's projections of the global batch's rows (harness.api.distributed)."""
        return {m: gather(z) for m, z in self.project(inputs).items()}
