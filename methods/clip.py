"""CLIP: symmetric InfoNCE between the embeddings of two modalities, with a learnable logit scale.

With more than two modalities, every pair of modalities contributes one term.
The probe sees all modalities' embeddings side by side.
"""

import itertools
import math

import torch
from torch import nn

from harness.method import Method, Requirements
from harness.space import POSITIVE, SIZE, Choice
from methods.common.encoders import ModalityEncoders
from methods.common.losses import symmetric_info_nce

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the scale so the softmax cannot collapse


class CLIP(Method):
    name = "clip"
    display_name = "CLIP"
    description = "Cross-modal symmetric InfoNCE with a learnable temperature (Radford et al. 2021)."
    requirements = Requirements(min_modalities=2)
    search_space = {"embed_dim": Choice((64, 128, 256))}
    defaults = {"embed_dim": 128, "init_temperature": 0.07}
    domains = {"embed_dim": SIZE, "init_temperature": POSITIVE}

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoders = ModalityEncoders(task, int(hparams["embed_dim"]))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / float(hparams["init_temperature"]))))

    def loss(self, batch):
        embeddings = self.encoders(batch.inputs)
        scale = self.log_logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        terms = [symmetric_info_nce(embeddings[a], embeddings[b], scale)
                 for a, b in itertools.combinations(embeddings, 2)]
        return {"loss": torch.stack(terms).mean(), "logit_scale": scale.detach()}

    def parts(self, inputs):
        """Each modality's embedding, for diagnostics (harness.diagnostics)."""
        return self.encoders.parts(inputs)

    def encode(self, inputs):
        return self.encoders.joint(inputs)
