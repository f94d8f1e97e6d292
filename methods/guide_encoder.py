"""Reference row: the frozen image encoder of the guide the CLIP-guided rows use, probed on the task; trains nothing.

Where the target has no captions, CLIP itself cannot be trained on it; its place in the table is the guide's own
image encoder, built exactly as the guided rows build it for the same seed (methods.common.guides: the same
`guide` spec and recipe, the same guide seed), so the table shows how much of the guide's linking the guided
student keeps. Only encoder guides qualify: a table of training-row embeddings (oracle, embeddings:PATH) cannot
embed the probe's validation and test rows.
"""

from __future__ import annotations

import torch

from harness.api.errors import HarnessError
from harness.api.method import InputModalities, Method, Requirements
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
        self.guide = None
        # Empty, so that the method has a device: the harness moves it to the run's before `prepare`, and the
        # guide is trained there, as the guided rows' guide is.
        self.register_buffer("on_device", torch.zeros(0))

    def prepare(self, train) -> None:
        spec = str(self.hparams["guide"])
        guide = build_guide(spec, self.task, train, guide_recipe(self.hparams, self.task), self.on_device.device)
        if not guide.per_view:
            raise HarnessError(f"guide-encoder: guide {spec} is a table of training-row embeddings, which cannot "
                               f"embed the probe's other rows; give an encoder guide (clip, simclr, random, module:...)")
        self.guide = guide

    def record_notes(self) -> dict[str, str]:
        return dict(getattr(self.guide, "facts", {}))

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.guide is None:
            raise RuntimeError("prepare() builds the guide; the harness calls it before encoding")
        return self.guide.encoder(inputs[self.image])
