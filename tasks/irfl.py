"""IRFL (Yosef et al. 2023) as FactorCL uses it: which figure of speech does a captioned image show?

Three CSVs, one per figure of speech (200 idiom, 277 simile, 333 metaphor
rows), in either published layout: the dataset's GitHub repository named them
`<figure>_understanding_task.csv`, its HuggingFace copy names them
`<figure>_detection_task.csv`. Columns read: `phrase` (the caption),
`figurative_type` (the 3-class label), `answer` (a JSON list naming the true
image) and, where present, `images_metadata` (a JSON list giving every image of
the row its `uuid`). Each caption is paired with its TRUE image; FactorCL's
public notebook reads the `distractors` column there instead.

An answer names its image by web URL (or, for 37 idioms, by the image's own
base64 data) in the GitHub files and by uuid in the HuggingFace ones. Either
way it resolves to a uuid, and the image is read from `irfl/images/<uuid>.jpeg`,
the layout of HuggingFace's `IRFL_images.zip`. (Names cut from URL tails
collide: 786 answer images would get 739 names.) Images are resized to a
square of IMAGE_SIZE pixels; captions become word ids over a vocabulary built
from the training captions. The rows are split 80/10/10 by a fixed
permutation (the paper: a random 80/20 train/test split, no validation split).
"""

from __future__ import annotations

import ast
import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from harness.api.task import DataSource, Modality, Task, TaskData, TensorSplit
from tasks.common.augment import augment_by_kind
from tasks.common.datafiles import DataFiles, split_rows
from tasks.common.text import Vocabulary

FIGURES = ("idiom", "simile", "metaphor")  # label ids in this order, as FactorCL's notebook numbers them
LAYOUTS = {"github": "irfl/{figure}_understanding_task.csv", "huggingface": "irfl/{figure}_detection_task.csv"}
IMAGE_DIR = "irfl/images"
COLUMNS = ("phrase", "answer", "figurative_type")
UUID = re.compile(r"\d+")  # every uuid in the dataset's images_metadata is a decimal number
IMAGE_SIZE = 64
CAPTION_LENGTH = 16
MAX_WORDS = 5000
SPLIT_SEED = 0
INSTRUCTIONS = ("Get the three IRFL task CSVs (*_detection_task.csv) and IRFL_images.zip, unzipped to "
                "irfl/images/<uuid>.jpeg, from https://huggingface.co/datasets/lampent/IRFL; "
                "see docs/benchmarks.md for the layout")


@dataclass(frozen=True)
class IrflRow:
    csv_path: Path
    row: int  # 1-based, counting data rows (a CSV line may hold several when a cell has line breaks)
    phrase: str
    figure: str
    uuid: str


class Irfl(Task):
    name = "irfl"
    version = "2"  # 2: answers resolved to images/<uuid>.jpeg through images_metadata (1 cut names from URLs)
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
        return DataSource("files", files=(*csv_files(self.data_dir).values(), IMAGE_DIR), instructions=INSTRUCTIONS)

    def identity(self):
        encoders = {m.name: m.encoder for m in self.modalities}
        return super().identity() | {"params": {**self.params, "image_size": IMAGE_SIZE,
                                                "caption_length": CAPTION_LENGTH, "encoders": encoders,
                                                "pairing": "true image", "images": "images/<uuid>.jpeg"}}

    def load(self) -> TaskData:
        files = DataFiles(self.name, self.data_dir, INSTRUCTIONS)
        image_dir = files.existing(IMAGE_DIR)
        rows = [row for relative in csv_files(self.data_dir).values() for row in read_rows(files, relative)]
        images = load_images(files, image_dir, rows)
        captions = [row.phrase for row in rows]
        labels = torch.tensor([FIGURES.index(row.figure) for row in rows], dtype=torch.int64)
        parts = split_rows(len(rows), (0.1, 0.1), SPLIT_SEED)
        vocabulary = Vocabulary((captions[i] for i in parts["train"]), MAX_WORDS)
        tokens = vocabulary.encode(captions, CAPTION_LENGTH)

        def split(name: str) -> TensorSplit:
            take = torch.from_numpy(parts[name])
            return TensorSplit({"image": images[take], "caption": tokens[take]}, labels[take])

        return TaskData(train=split("train"), val=split("val"), test=split("test"))

    def augment(self, modality, x):
        return augment_by_kind(self.modality(modality).kind, x)


def csv_files(data_dir: Path | None) -> dict[str, str]:
    """figure -> CSV path under the data directory, in the layout most of whose files are there
    (HuggingFace's, where the data now live, when neither has more)."""
    layouts = {layout: {f: pattern.format(figure=f) for f in FIGURES} for layout, pattern in LAYOUTS.items()}
    present = {layout: sum((data_dir / p).exists() for p in paths.values()) if data_dir else 0
               for layout, paths in layouts.items()}
    return layouts["github"] if present["github"] > present["huggingface"] else layouts["huggingface"]


def read_rows(files: DataFiles, relative: str) -> list[IrflRow]:
    """One IrflRow per data row of a task CSV, each answer resolved to its image's uuid."""
    path = files.existing(relative)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                found = ", ".join(reader.fieldnames or []) or "none"
                raise files.fail(path, f"missing column '{missing[0]}' (found: {found})")
            rows = [IrflRow(path, number, row["phrase"] or "", figure_of(files, path, number, row["figurative_type"]),
                            answer_uuid(files, path, number, row))
                    for number, row in enumerate(reader, start=1)]
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise files.fail(path, f"not a readable CSV ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not rows:
        raise files.fail(path, "has no rows")
    return rows


def answer_uuid(files: DataFiles, path: Path, number: int, row: dict[str, Any]) -> str:
    """The uuid of the row's true image: the `images_metadata` entry whose `img` is the answer, or the
    answer itself where it already is a uuid (HuggingFace's files, optionally with a .jpeg suffix)."""
    answer = first_entry(files, path, number, "answer", row["answer"])
    metadata = images_metadata(files, path, number, row.get("images_metadata"))
    by_image = {entry["img"].strip(): str(entry.get("uuid", "")).strip() for entry in metadata
                if isinstance(entry.get("img"), str)}
    if answer in by_image:
        if not UUID.fullmatch(by_image[answer]):
            raise files.fail(path, f"row {number}: images_metadata gives the answer the uuid "
                                   f"{shorten(by_image[answer])}, which is not a decimal number")
        return by_image[answer]
    stem = PurePosixPath(answer).stem if answer.lower().endswith((".jpeg", ".jpg")) else answer
    if UUID.fullmatch(stem) and (not metadata or stem in by_image.values()):
        return stem
    where = "images_metadata has no entry for it" if row.get("images_metadata") is not None else \
        "it is not an image uuid and the file has no images_metadata column to resolve it"
    raise files.fail(path, f"row {number}: answer {shorten(answer)} names no image ({where})")


def first_entry(files: DataFiles, path: Path, number: int, column: str, cell: str | None) -> str:
    value = parse_list(cell)
    first = value[0] if isinstance(value, list) and value else value
    if not isinstance(first, str) or not first.strip():
        raise files.fail(path, f"row {number}: '{column}' is not a list naming an image: {shorten(cell or '')}")
    return first.strip()


def images_metadata(files: DataFiles, path: Path, number: int, cell: str | None) -> list[dict]:
    if cell is None or not cell.strip():
        return []
    value = parse_list(cell)
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise files.fail(path, f"row {number}: 'images_metadata' is not a JSON list of objects: {shorten(cell)}")
    return value


def parse_list(cell: str | None) -> Any:
    """A JSON list as the files write them; a Python-literal list is read too (never evaluated as code)."""
    text = (cell or "").strip()
    if not text.startswith("["):
        return text
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def figure_of(files: DataFiles, path: Path, number: int, cell: str | None) -> str:
    figure = (cell or "").strip().lower()
    if figure not in FIGURES:
        raise files.fail(path, f"row {number}: figurative_type {cell!r} is not one of {', '.join(FIGURES)}")
    return figure


def shorten(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def load_images(files: DataFiles, image_dir: Path, rows: list[IrflRow]) -> torch.Tensor:
    """(rows, 3, IMAGE_SIZE, IMAGE_SIZE) uint8; an image several rows share is read once."""
    loaded: dict[str, np.ndarray] = {}
    for row in rows:
        if row.uuid not in loaded:
            loaded[row.uuid] = load_image(files, image_dir / f"{row.uuid}.jpeg", row)
    return torch.from_numpy(np.stack([loaded[row.uuid] for row in rows]))


def load_image(files: DataFiles, image_path: Path, row: IrflRow) -> np.ndarray:
    """(3, IMAGE_SIZE, IMAGE_SIZE) uint8, RGB."""
    try:
        with Image.open(image_path) as image:
            resized = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise files.fail(image_path, f"image of row {row.row} of {row.csv_path.name} not found") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise files.fail(image_path, f"image of row {row.row} of {row.csv_path.name} is not a readable image "
                                     f"({type(exc).__name__})") from None
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1).copy()
