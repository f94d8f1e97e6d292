"""Small data files in the exact public formats, written by the tests themselves.

MultiBench's affect pickles and MIMIC's im.pk are pickled dicts of numpy
arrays; IRFL is three CSVs whose `answer` column lists image URLs, plus the
image files. Labels alternate so that every split holds every class.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

AFFECT = {  # task -> (file, vision width, label kind)
    "mosi": ("mosi_data.pkl", 20, "sentiment"),
    "mosei": ("mosei_senti_data.pkl", 35, "sentiment"),
    "ur-funny": ("humor.pkl", 371, "binary"),
    "mustard": ("sarcasm.pkl", 371, "binary"),
}
AFFECT_ROWS = {"train": 24, "valid": 12, "test": 12}
MIMIC_ROWS = 60
IRFL_PER_FIGURE = 12


def affect_split(rows: int, vision_dim: int, label_kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    vision = rng.normal(size=(rows, 50, vision_dim)).astype(np.float32)
    text = rng.normal(size=(rows, 50, 300)).astype(np.float32)
    text[:, :10] = 0.0  # MultiBench pads at the front with zeros
    text[-1] = 0.0  # one entry with no text at all: the loader drops it
    audio = rng.normal(size=(rows, 50, 5)).astype(np.float32)
    audio[0, 0, 0] = -np.inf  # MultiBench's audio carries -inf; unused, but it must not break anything
    positive = np.arange(rows) % 2 == 0
    if label_kind == "sentiment":
        labels = np.where(positive, rng.uniform(0, 3, rows), rng.uniform(-3, -0.1, rows)).reshape(rows, 1)
    else:
        labels = np.where(positive, 1.0, -1.0).reshape(rows, 1, 1)
    return {"vision": vision, "audio": audio, "text": text, "labels": labels.astype(np.float32),
            "id": np.array([f"clip{i}" for i in range(rows)])}


def write_affect(root: Path, task: str, **changes) -> Path:
    """The task's pickle; `changes` replace whole splits or, as (split, key) tuples, single arrays."""
    filename, vision_dim, label_kind = AFFECT[task]
    rng = np.random.default_rng(0)
    content = {split: affect_split(rows, vision_dim, label_kind, rng) for split, rows in AFFECT_ROWS.items()}
    for where, value in changes.get("arrays", {}).items():
        split, key = where
        if value is None:
            del content[split][key]
        else:
            content[split][key] = value
    path = root / filename
    path.write_bytes(pickle.dumps(content))
    return path


def write_mimic(root: Path, drop: str | None = None, replace: dict | None = None) -> Path:
    rng = np.random.default_rng(1)
    n = MIMIC_ROWS
    icd9 = rng.integers(0, 2, (n, 20)).astype(np.float64)
    icd9[:, 7] = np.arange(n) % 2
    content = {"ep_tdata": rng.normal(3.0, 2.0, (n, 24, 12)), "adm_features_all": rng.normal(50, 10, (n, 5)),
               "y_icd9": icd9, "adm_labels_all": rng.integers(0, 2, (n, 4))}
    content["ep_tdata"][0, 0, 0] = np.nan
    if drop:
        del content[drop]
    content.update(replace or {})
    path = root / "im.pk"
    path.write_bytes(pickle.dumps(content))
    return path


IRFL_HEADER = ["phrase", "distractors", "answer", "figurative_type", "type", "definition"]


def write_irfl(root: Path, rows_per_figure: int = IRFL_PER_FIGURE) -> Path:
    folder = root / "irfl"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for f, figure in enumerate(("idiom", "simile", "metaphor")):
        with (folder / f"{figure}_understanding_task.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(IRFL_HEADER)
            for i in range(rows_per_figure):
                answer, distractor = f"{figure}{i}.jpeg", f"{figure}{i}_d.png"
                pixels = rng.integers(0, 256, (24 + i, 20, 3), dtype=np.uint8)
                pixels[..., f] = 255  # each figure's true images lean to one colour: learnable
                Image.fromarray(pixels).save(folder / "images" / answer)
                Image.fromarray(255 - pixels).save(folder / "images" / distractor)
                url = "https://irfl.example/images/"
                writer.writerow([f"as {figure} as word{i} the {figure}", repr([url + distractor] * 3),
                                 repr([url + answer]), figure, "Figurative", "[]"])
    return folder
