"""The four affect benchmarks of FactorCL, from MultiBench's processed pickles.

Each pickle is a dict with splits `train`, `valid`, `test`; each split a dict
of numpy arrays `vision` (N, 50, dv), `audio`, `text` (N, 50, 300: GloVe
vectors), `labels` (N,), (N, 1) or (N, 1, 1), and `id`. FactorCL uses the
vision and text streams and a binary label. As MultiBench's loader does:
entries whose text features sum to zero carry no utterance and are dropped;
sequences are zero-padded at the front, and the steps before the first word
(the first text step that is not all zero) are padding in every modality
(MultiBench crops them from all three), so they are zeroed here; non-finite
feature values are set to 0.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from harness.api.task import DataSource, Modality, Task, TaskData, TensorSplit
from tasks.common.augment import augment_by_kind
from tasks.common.datafiles import DataFiles, finite, flat_labels

log = logging.getLogger(__name__)

SEQ_LEN = 50
TEXT_DIM = 300
SPLITS = {"train": "train", "val": "valid", "test": "test"}  # ours -> the pickle's
MODALITIES = ("vision", "text")
MULTIBENCH = "https://github.com/pliang279/MultiBench (affect datasets, section 'Affective computing')"
SEQUENCE_ENCODER = "transformer"


class AffectTask(Task):
    """One MultiBench affect pickle; subclasses set the file, vision width and label rule."""

    suite = "multibench"
    version = "2"  # 2: steps before the first word are padding in vision too; entries dropped by MultiBench's rule
    label_kind = "binary"
    # FactorCL's notebooks: batch 128, 100 epochs. Our default epochs are fewer for CPU budgets.
    default_epochs = 20
    default_batch_size = 128
    filename: ClassVar[str]
    vision_dim: ClassVar[int]
    drive_id: ClassVar[str]

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return (Modality("vision", "sequence", (SEQ_LEN, self.vision_dim), encoder=SEQUENCE_ENCODER),
                Modality("text", "sequence", (SEQ_LEN, TEXT_DIM), encoder=SEQUENCE_ENCODER))

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def source(self) -> DataSource:
        return DataSource("files", files=(self.filename,), instructions=(
            f"Get {self.filename} from MultiBench's Google Drive "
            f"(https://drive.google.com/uc?id={self.drive_id}), linked from {MULTIBENCH}; "
            f"see docs/benchmarks.md"))

    def identity(self):
        encoders = {m.name: m.encoder for m in self.modalities}
        return super().identity() | {"params": {**self.params, "modalities": list(MODALITIES),
                                                "encoders": encoders, "label": self.label_rule}}

    label_rule: ClassVar[str]

    def binary_labels(self, files: DataFiles, path: Path, raw: np.ndarray, what: str) -> np.ndarray:
        raise NotImplementedError

    def load(self) -> TaskData:
        files = DataFiles(self.name, self.data_dir, self.source.instructions)
        path = files.path(self.filename)
        content = files.read_pickle(self.filename)
        splits = {ours: self._split(files, path, files.key(path, content, theirs), theirs)
                  for ours, theirs in SPLITS.items()}
        return TaskData(**splits)

    def _split(self, files: DataFiles, path: Path, split: dict, name: str) -> TensorSplit:
        where = f" in split '{name}'"
        text = files.array(path, files.key(path, split, "text", where), f"'{name}/text'", (None, SEQ_LEN, TEXT_DIM))
        rows = len(text)
        vision = files.array(path, files.key(path, split, "vision", where), f"'{name}/vision'",
                             (rows, SEQ_LEN, self.vision_dim))
        raw = files.array(path, files.key(path, split, "labels", where), f"'{name}/labels'", None)
        labels = self.binary_labels(files, path, flat_labels(path, files, raw, rows, f"'{name}/labels'"),
                                    f"'{name}/labels'")
        keep = text.reshape(rows, -1).sum(axis=1) != 0  # MultiBench's drop_entry: `text.sum() == 0` is dropped
        if not keep.all():
            log.info("%s %s: dropped %d of %d entries without text, as MultiBench does", self.name, name,
                     int((~keep).sum()), rows)
        spoken = spoken_steps(text[keep])
        inputs = {"vision": torch.from_numpy(finite(vision[keep]) * spoken[..., None]),
                  "text": torch.from_numpy(finite(text[keep]))}
        return TensorSplit(inputs, torch.from_numpy(labels[keep]))

    def augment(self, modality, x):
        return augment_by_kind(self.modality(modality).kind, x)


def spoken_steps(text: np.ndarray) -> np.ndarray:
    """(N, T) float32 mask: 1 from each entry's first word on. MultiBench's aligned loader starts every
    modality at the first text step holding a non-zero value (NaN included); what lies before is padding."""
    spoken = (text != 0).any(axis=2)
    return (np.cumsum(spoken, axis=1) > 0).astype(np.float32)


class SentimentTask(AffectTask):
    """CMU-MOSI / CMU-MOSEI: sentiment in [-3, 3], binarized as FactorCL's code does (score >= 0 is positive)."""

    label_rule = "sentiment >= 0"

    def binary_labels(self, files, path, raw, what):
        if not np.isfinite(raw).all() or raw.min() < -3 or raw.max() > 3:
            raise files.fail(path, f"{what} has values outside the sentiment range [-3, 3] "
                                   f"(min {np.nanmin(raw):g}, max {np.nanmax(raw):g})")
        return (raw >= 0).astype(np.int64)


class BinaryLabelTask(AffectTask):
    """UR-FUNNY / MUStARD: labels already binary, as 0/1 or -1/1 (-1 maps to 0, as FactorCL's code does)."""

    label_rule = "label as given (-1 -> 0)"

    def binary_labels(self, files, path, raw, what):
        files.label_set(path, raw, what, (-1, 0, 1))
        if {-1, 0} <= set(np.unique(raw).tolist()):
            raise files.fail(path, f"{what} mixes -1 and 0; expected either 0/1 or -1/1")
        return (raw > 0).astype(np.int64)


class Mosi(SentimentTask):
    name = "mosi"
    description = "CMU-MOSI (MultiBench): vision 50x20 + text 50x300, binary sentiment."
    filename = "mosi_data.pkl"
    vision_dim = 20
    drive_id = "1_XdzdW8UNG1TTS6QcX10uhoS6N11OBit"


class Mosei(SentimentTask):
    name = "mosei"
    description = "CMU-MOSEI (MultiBench): vision 50x35 + text 50x300, binary sentiment."
    filename = "mosei_senti_data.pkl"
    vision_dim = 35
    drive_id = "180l4pN6XAv8-OAYQ6OrMheFUMwtqUWbz"


class UrFunny(BinaryLabelTask):
    name = "ur-funny"
    description = "UR-FUNNY (MultiBench humor.pkl): vision 50x371 + text 50x300, humor or not."
    filename = "humor.pkl"
    vision_dim = 371
    drive_id = "1L5slPmYyhEVtwGyM1kgcFMjeBpXLZGT0"


class Mustard(BinaryLabelTask):
    name = "mustard"
    description = "MUStARD (MultiBench sarcasm.pkl): vision 50x371 + text 50x300, sarcasm or not."
    filename = "sarcasm.pkl"
    vision_dim = 371
    drive_id = "1EMBUmUL5B0PTncGx3L-sBElGOmjFBR_h"
