"""SimCLR: NT-Xent between two augmented views of each sample (Chen et al. 2020).

On a task with images, SimCLR trains on and is probed on its image encoder
alone, as in the paper: a caption beside the image never reaches it (the
harness hands it image batches only; see `input_modalities`). On a task
without images, a multimodal sample is augmented modality by modality and its
view is the projection of all modalities' embeddings together. The probe sees
the embeddings before the projection head, as in SimCLR.
"""

from harness.api.distributed import gather
from harness.api.method import InputModalities, Method, Requirements
from harness.api.space import POSITIVE, SIZE, Choice, Float
from methods.common.encoders import ModalityEncoders, projection_head
from methods.common.losses import nt_xent
from methods.common.vision_text import image_modalities


class SimCLR(Method):
    name = "simclr"
    display_name = "SimCLR"
    version = "2"  # 2: on tasks with images, image encoder only (1 also encoded and probed the captions)
    description = "NT-Xent between two augmented views; images alone where the task has them."
    requirements = Requirements(needs_augmentations=True)
    search_space = {"temperature": Float(0.05, 0.5, log=True), "embed_dim": Choice((64, 128, 256))}
    defaults = {"temperature": 0.1, "embed_dim": 128, "projection_dim": 128}
    domains = {"temperature": POSITIVE, "embed_dim": SIZE, "projection_dim": SIZE}

    @classmethod
    def input_modalities(cls, task) -> InputModalities:
        names = image_modalities(task) or tuple(m.name for m in task.modalities)
        return InputModalities(names, names)

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoders = ModalityEncoders(task, int(hparams["embed_dim"]), self.input_modalities(task).train)
        joint = self.encoders.joint_dim
        self.projector = projection_head(joint, int(hparams["projection_dim"]))

    def loss(self, batch):
        pair = batch.paired_views()  # both views in one call where the task draws them so (ImageNet)
        z1 = self.projector(self.encoders.joint(pair[0] if pair else batch.views()))
        z2 = self.projector(self.encoders.joint(pair[1] if pair else batch.views()))
        # Gathered: the negatives are the global batch when several ranks train (harness.api.distributed).
        return nt_xent(gather(z1), gather(z2), float(self.hparams["temperature"]))

    def parts(self, inputs):
        """Each modality's embedding, for diagnostics (harness.results.diagnostics)."""
        return self.encoders.parts(inputs)

    def encode(self, inputs):
        return self.encoders.joint(inputs)
