"""Small data files in the public formats and conventions, written by the tests themselves.

MultiBench's affect pickles: splits `train`, `valid`, `test`, each a dict of
float32 arrays (N, 50, d) zero-padded at the FRONT in every modality (MultiBench
pads GloVe text at the front and its aligned loader crops every modality at
the first word), audio carrying -inf, string ids; MOSI/MOSEI sentiment in
[-3, 3] shaped (N, 1, 1) with some labels exactly 0.0 (positive, by `>= 0`);
UR-FUNNY/MUStARD labels 0/1 (MultiBench maps `< 1` to its negative class; the
shape is not confirmed, here (N, 1)). MIMIC's im.pk: float64 arrays,
`adm_labels_all` six columns wide (MultiBench reads columns 1-5). IRFL: CSVs
with the real columns, `answer` and `images_metadata` as JSON, answers by URL
(tails that collide, one as base64 image data) and images at images/<uuid>.jpeg.
Labels alternate so that every split holds every class.
"""

from __future__ import annotations

import base64
import csv
import io
import json
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
SEQ_LEN = 50
MIMIC_ROWS = 60
MIMIC_MORTALITY_COLUMNS = 6
IRFL_PER_FIGURE = 12
FIGURES = ("idiom", "simile", "metaphor")


def affect_split(rows: int, vision_dim: int, label_kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    words = rng.integers(1, SEQ_LEN + 1, rows)  # utterance lengths; the rest of the 50 steps is front padding
    words[0] = SEQ_LEN  # one utterance fills all steps
    words[-1] = 0  # one entry with no text at all: MultiBench drops it
    spoken = np.arange(SEQ_LEN)[None, :] >= (SEQ_LEN - words)[:, None]

    def stream(width: int) -> np.ndarray:
        return (rng.normal(size=(rows, SEQ_LEN, width)) * spoken[..., None]).astype(np.float32)

    vision, audio, text = stream(vision_dim), stream(5), stream(300)
    audio[0, -1, 0] = -np.inf  # MultiBench's audio carries -inf; unused, but it must not break anything
    positive = np.arange(rows) % 2 == 0
    if label_kind == "sentiment":
        labels = np.where(positive, rng.uniform(0.2, 3, rows), rng.uniform(-3, -0.2, rows))
        labels[::6] = 0.0  # neutral: exactly 0, positive by FactorCL's `>= 0`
        labels = labels.reshape(rows, 1, 1)
    else:
        labels = positive.astype(np.float64).reshape(rows, 1)
    return {"vision": vision, "audio": audio, "text": text, "labels": labels.astype(np.float32),
            "id": np.array([f"clip{i}[{i % 3}]" for i in range(rows)])}


def write_affect(root: Path, task: str, **changes) -> Path:
    """The task's pickle; `arrays` maps (split, key) to a replacement array, or None to delete it."""
    filename, vision_dim, label_kind = AFFECT[task]
    rng = np.random.default_rng(0)
    content = {split: affect_split(rows, vision_dim, label_kind, rng) for split, rows in AFFECT_ROWS.items()}
    for (split, key), value in changes.get("arrays", {}).items():
        if value is None:
            del content[split][key]
        else:
            content[split][key] = value
    path = root / filename
    path.write_bytes(pickle.dumps(content))
    return path


def mimic_content(n: int = MIMIC_ROWS) -> dict[str, np.ndarray]:
    """im.pk's arrays; static feature 0 holds the row id, so a test can tell which rows a split took."""
    rng = np.random.default_rng(1)
    icd9 = rng.integers(0, 2, (n, 20)).astype(np.float64)
    icd9[:, 7] = np.arange(n) % 2
    static = rng.normal(50, 10, (n, 5))
    static[:, 0] = np.arange(n)
    content = {"ep_tdata": rng.normal(3.0, 2.0, (n, 24, 12)), "adm_features_all": static, "y_icd9": icd9,
               "adm_labels_all": rng.integers(0, 2, (n, MIMIC_MORTALITY_COLUMNS)).astype(np.float64)}
    content["ep_tdata"][1, 0, 0] = np.nan
    return content


def write_mimic(root: Path, drop: str | None = None, replace: dict | None = None, rows: int = MIMIC_ROWS) -> Path:
    content = mimic_content(rows)
    if drop:
        del content[drop]
    content.update(replace or {})
    path = root / "im.pk"
    path.write_bytes(pickle.dumps(content))
    return path


# -- IRFL -------------------------------------------------------------------------------------------

IRFL_COLUMNS = {  # as the dataset's understanding-task CSVs order them
    "idiom": ["query", "distractors", "answer", "figurative_type", "images_metadata", "type", "definition", "phrase"],
    "simile": ["distractors", "answer", "images_metadata", "figurative_type", "type", "phrase"],
    "metaphor": ["distractors", "answer", "images_metadata", "figurative_type", "type", "phrase"],
}


def irfl_uuid(rng: np.random.Generator) -> str:
    return "".join(str(d) for d in rng.integers(0, 10, 77)).lstrip("0")


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_irfl(root: Path, rows_per_figure: int = IRFL_PER_FIGURE, layout: str = "github") -> Path:
    """The three task CSVs and their images. Every figure's true images are saturated in its own colour
    channel, distractors are not. Two similes share one answer image, as the real files do; answer URLs
    end in the same file name across rows; the first idiom's answer is base64 image data."""
    folder = root / "irfl"
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for f, figure in enumerate(FIGURES):
        records = []
        for i in range(rows_per_figure):
            pixels = rng.integers(0, 256, (24 + i, 20, 3), dtype=np.uint8)
            pixels[..., f] = 255  # each figure's true images lean to one colour: learnable
            answer_data = jpeg_bytes(pixels)
            answer = (base64.b64encode(answer_data).decode() if (figure, i) == ("idiom", 0)
                      else f"https://i.ytimg.com/vi/{figure}{i}/maxresdefault.jpg")
            answer_uuid = irfl_uuid(rng)
            if (figure, i) == ("simile", 1):  # the dataset reuses an image: same URL, same uuid
                answer, answer_uuid, answer_data = records[0]["answer"], records[0]["uuid"], records[0]["data"]
            distractors = [(f"https://cdn.example/{figure}/{i}/{k}/image.jpg", irfl_uuid(rng)) for k in range(3)]
            (images / f"{answer_uuid}.jpeg").write_bytes(answer_data)
            for _, distractor_uuid in distractors:
                (images / f"{distractor_uuid}.jpeg").write_bytes(jpeg_bytes(255 - pixels))
            metadata = [{"img": url, "source": "https://example.org/page", "uuid": uuid}
                        for url, uuid in [*distractors, (answer, answer_uuid)]]
            if layout == "huggingface":  # answers and distractors are uuids already
                answer_cell, distractor_cell = [answer_uuid], [uuid for _, uuid in distractors]
            else:
                answer_cell, distractor_cell = [answer], [url for url, _ in distractors]
            records.append({"answer": answer, "uuid": answer_uuid, "data": answer_data, "row": {
                "query": f"meaning {i}", "definition": json.dumps([f"meaning {i}"]),
                "distractors": json.dumps(distractor_cell), "answer": json.dumps(answer_cell),
                "images_metadata": json.dumps(metadata), "figurative_type": figure, "type": "figurative",
                "phrase": f"as {figure} as word{i} the {figure}"}})
        write_irfl_csv(folder, figure, [r["row"] for r in records], layout)
    return folder


def write_irfl_csv(folder: Path, figure: str, rows: list[dict], layout: str) -> Path:
    columns = IRFL_COLUMNS[figure]
    if layout == "huggingface":  # not confirmed that the HuggingFace files keep images_metadata: assume not
        columns = [c for c in columns if c != "images_metadata"]
    name = f"{figure}_detection_task.csv" if layout == "huggingface" else f"{figure}_understanding_task.csv"
    path = folder / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
