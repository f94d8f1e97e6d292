"""IRFL (Yosef et al. 2023) as FactorCL uses it: which figure of speech does a captioned image show?

Three CSVs of IRFL's understanding task, one per figure of speech, with at
least the columns `phrase` (the caption), `answer` (a Python-literal list whose
first entry is the true image's URL or file name), `distractors` (the wrong
images, unused here) and `figurative_type` (idiom, simile or metaphor: the
3-class label). Each caption is paired with its TRUE image (`answer`); FactorCL's
public notebook reads the `distractors` column there instead. Images are read
from `irfl/images/`, named as the last part of the answer's URL, and resized to
a square of IMAGE_SIZE pixels. Captions become word ids over a vocabulary built
from the training captions. The rows are split 80/10/10 by a fixed permutation
(the paper: a random 80/20 train/test split, no validation split).
"""

from __future__ import annotations

import ast
import csv
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from harness.task import DataSource, Modality, Task, TaskData, TensorSplit
from tasks.common.augment import augment_by_kind
from tasks.common.datafiles import DataFiles, split_rows
from tasks.common.text import Vocabulary

FIGURES = ("idiom", "simile", "metaphor")  # label ids in this order, as FactorCL's notebook numbers them
CSV_FILES = {figure: f"irfl/{figure}_understanding_task.csv" for figure in FIGURES}
IMAGE_DIR = "irfl/images"
COLUMNS = ("phrase", "answer", "figurative_type")
IMAGE_SIZE = 64
CAPTION_LENGTH = 16
MAX_WORDS = 5000
SPLIT_SEED = 0
INSTRUCTIONS = ("Get the IRFL understanding-task CSVs and images from https://huggingface.co/datasets/lampent/IRFL "
                "(or https://github.com/irfl-dataset/IRFL, assets/tasks/); see docs/benchmarks.md for the layout")


class Irfl(Task):
    name = "irfl"
    version = "1"
    suite = "multibench"
    description = "IRFL: image + caption, 3-class figure of speech (idiom, simile, metaphor); true images only."
    label_kind = "multiclass"
    default_epochs = 10  # FactorCL's notebook: 10 epochs, batch 16, fine-tuning CLIP at lr 1e-6
    default_batch_size = 16

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return (Modality("image", "image", (3, IMAGE_SIZE, IMAGE_SIZE), encoder="small-cnn"),
                Modality("caption", "tokens", (CAPTION_LENGTH,), vocab_size=MAX_WORDS + 2, encoder="text"))

    @property
    def num_classes(self) -> int:
        return len(FIGURES)

    @property
    def source(self) -> DataSource:
        return DataSource("files", files=(*CSV_FILES.values(), IMAGE_DIR), instructions=INSTRUCTIONS)

    def identity(self):
        encoders = {m.name: m.encoder for m in self.modalities}
        return super().identity() | {"params": {**self.params, "image_size": IMAGE_SIZE,
                                                "caption_length": CAPTION_LENGTH, "encoders": encoders,
                                                "pairing": "true image"}}

    def load(self) -> TaskData:
        files = DataFiles(self.name, self.data_dir, INSTRUCTIONS)
        image_dir = files.existing(IMAGE_DIR)
        rows = [row for figure in FIGURES for row in read_rows(files, CSV_FILES[figure])]
        images = np.stack([load_image(files, path, image_dir / image) for path, _, image, _ in rows])
        captions = [caption for _, caption, _, _ in rows]
        labels = np.array([FIGURES.index(figure) for *_, figure in rows], dtype=np.int64)
        parts = split_rows(len(rows), (0.1, 0.1), SPLIT_SEED)
        vocabulary = Vocabulary((captions[i] for i in parts["train"]), MAX_WORDS)
        tokens = vocabulary.encode(captions, CAPTION_LENGTH)

        def split(name: str) -> TensorSplit:
            take = torch.from_numpy(parts[name])
            return TensorSplit({"image": torch.from_numpy(images)[take], "caption": tokens[take]},
                               torch.from_numpy(labels)[take])

        return TaskData(train=split("train"), val=split("val"), test=split("test"))

    def augment(self, modality, x):
        return augment_by_kind(self.modality(modality).kind, x)


def read_rows(files: DataFiles, relative: str) -> list[tuple[Path, str, str, str]]:
    """(csv path, caption, image file name, figure) per row of one understanding-task CSV."""
    path = files.existing(relative)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                found = ", ".join(reader.fieldnames or []) or "none"
                raise files.fail(path, f"missing column '{missing[0]}' (found: {found})")
            rows = [(path, row["phrase"], answer_image(files, path, row["answer"], line),
                     figure_of(files, path, row["figurative_type"], line))
                    for line, row in enumerate(reader, start=2)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise files.fail(path, f"not a readable CSV ({exc})") from None
    if not rows:
        raise files.fail(path, "has no rows")
    return rows


def answer_image(files: DataFiles, path: Path, cell: str, line: int) -> str:
    """The file name of the true image: the first entry of the `answer` list (or the cell itself)."""
    text = (cell or "").strip()
    try:
        value = ast.literal_eval(text) if text.startswith("[") else text
    except (ValueError, SyntaxError):
        raise files.fail(path, f"line {line}: 'answer' is not a list of image URLs: {text[:60]!r}") from None
    first = value[0] if isinstance(value, list) and value else value
    if not isinstance(first, str) or not first:
        raise files.fail(path, f"line {line}: 'answer' names no image")
    return PurePosixPath(urlparse(first).path).name


def figure_of(files: DataFiles, path: Path, cell: str, line: int) -> str:
    figure = (cell or "").strip().lower()
    if figure not in FIGURES:
        raise files.fail(path, f"line {line}: figurative_type {cell!r} is not one of {', '.join(FIGURES)}")
    return figure


def load_image(files: DataFiles, csv_path: Path, image_path: Path) -> np.ndarray:
    """(3, IMAGE_SIZE, IMAGE_SIZE) uint8, RGB."""
    if not image_path.exists():
        raise files.fail(image_path, f"image named in {csv_path.name} not found")
    try:
        with Image.open(image_path) as image:
            resized = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    except (UnidentifiedImageError, OSError) as exc:
        raise files.fail(image_path, f"not a readable image ({type(exc).__name__})") from None
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy()

