"""CLIP: symmetric InfoNCE between the embeddings of two modalities, with a learnable logit scale.

With more than two modalities, every pair of modalities contributes one term.
On a task with images the probe reads the image encoder alone, as CLIP's
linear-probe evaluations do; elsewhere it sees all modalities' embeddings side
by side. `image_crops` trains on random crops and flips of the images (the
geometry only), as CLIP-guided SimCLR's guide is trained.
"""

import itertools
import math

import torch
from torch import nn

from harness.api.distributed import gather
from harness.api.method import InputModalities, Method, Requirements
from harness.api.space import POSITIVE, SIZE, Choice, OneOf
from methods.common.encoders import ModalityEncoders
from methods.common.losses import symmetric_info_nce
from methods.common.vision_text import crop_and_flip, image_modalities

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the scale so the softmax cannot collapse


class CLIP(Method):
    name = "clip"
    display_name = "CLIP"
    version = "2"  # 2: probed on the image encoder alone on tasks with images (1 probed image and caption)
    description = "Cross-modal symmetric InfoNCE with a learnable temperature (Radford et al. 2021)."
    requirements = Requirements(min_modalities=2)
    search_space = {"embed_dim": Choice((64, 128, 256))}
    defaults = {"embed_dim": 128, "init_temperature": 0.07, "image_crops": False}
    domains = {"embed_dim": SIZE, "init_temperature": POSITIVE, "image_crops": OneOf((False, True))}

    @classmethod
    def input_modalities(cls, task) -> InputModalities:
        every = tuple(m.name for m in task.modalities)
        return InputModalities(every, image_modalities(task) or every)

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoders = ModalityEncoders(task, int(hparams["embed_dim"]))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / float(hparams["init_temperature"]))))
        self.cropped = image_modalities(task) if hparams.get("image_crops") else ()

    def loss(self, batch):
        inputs = {name: crop_and_flip(x) if name in self.cropped else x for name, x in batch.inputs.items()}
        embeddings = {name: gather(z) for name, z in self.encoders(inputs).items()}  # the global batch's rows
        scale = self.log_logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
        terms = [symmetric_info_nce(embeddings[a], embeddings[b], scale)
                 for a, b in itertools.combinations(embeddings, 2)]
        return {"loss": torch.stack(terms).mean(), "logit_scale": scale.detach()}

    def parts(self, inputs):
        """Each modality's embedding, for diagnostics (harness.results.diagnostics)."""
        return self.encoders.parts(inputs)

    def encode(self, inputs):
        return self.encoders.joint(inputs, self.input_modalities(self.task).probe)
