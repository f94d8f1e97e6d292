"""Reference row: the frozen image encoder of the guide the CLIP-guided rows use, probed on the task; trains nothing.

Where the target has no captions, CLIP itself cannot be trained on it; its place in the table is the guide's own
image encoder, built exactly as the guided rows build it for the same seed (methods.common.guides: the same
`guide` spec and recipe, the same guide seed), so the table shows how much of the guide's linking the guided
student keeps. Only encoder guides qualify: a table of training-row embeddings (oracle, embeddings:PATH) cannot
embed the probe's validation and test rows. A saved encoder of this row (harness.running.saved_encoders) loads
for the harness's own guides (clip, simclr, random: the task's default image encoder at `guide_embed_dim`); a
module: guide of another architecture is probed as it is, and not rebuilt from a saved file.
"""

from __future__ import annotations

import torch

from harness.api.errors import HarnessError
from harness.api.method import InputModalities, Method, Requirements
from methods.common.encoders import ModalityEncoders
from methods.common.guides import GUIDE_DEFAULTS, GUIDE_DOMAINS, build_guide, guide_recipe, image_modality
from methods.common.vision_text import image_modalities


class GuideEncoder(Method):
    name = "guide-encoder"
    display_name = "Guide's image encoder (frozen)"
    description = "Probe on the frozen image encoder of the guide the cgs rows build (for clip: its pool's CLIP)."
    trains = False
    requirements = Requirements(needs_guide=True)
    defaults = dict(GUIDE_DEFAULTS)
    domains = dict(GUIDE_DOMAINS)

    @classmethod
    def input_modalities(cls, task) -> InputModalities:
        return InputModalities(image_modalities(task), image_modalities(task))

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.image = image_modality(task)
        # The guide's architecture, built up front so that a saved encoder loads into it (load_encoder builds
        # the method and reads its weights); `prepare` copies the built guide's weights in.
        self.encoder = ModalityEncoders(task, int(hparams["guide_embed_dim"]), names=(self.image,))[self.image]
        self.guide_facts: dict[str, str] = {}

    def prepare(self, train) -> None:
        spec = str(self.hparams["guide"])
        device = next(self.encoder.parameters()).device  # the run's: the harness moves the method there first
        guide = build_guide(spec, self.task, train, guide_recipe(self.hparams, self.task), device)
        if not guide.per_view:
            raise HarnessError(f"guide-encoder: guide {spec} is a table of training-row embeddings, which cannot "
                               f"embed the probe's other rows; give an encoder guide (clip, simclr, random, "
                               f"module:...)")
        try:
            self.encoder.load_state_dict(guide.encoder.state_dict())
        except RuntimeError:  # a module: guide of another architecture is probed as it is
            self.encoder = guide.encoder
        self.encoder.eval().requires_grad_(False)
        self.guide_facts = dict(guide.facts)

    def record_notes(self) -> dict[str, str]:
        return dict(self.guide_facts)

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(inputs[self.image])
