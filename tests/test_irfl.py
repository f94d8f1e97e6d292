"""IRFL on the dataset's real CSVs (from the shared data folder) and on small files in both published layouts."""

import csv
import json
import shutil
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image

from harness.api.catalog import TASKS
from harness.cli import main
from tests.datafiles import FIGURES, write_irfl

ROOT = Path(__file__).resolve().parent.parent
REAL_ROWS = {"idiom": 200, "simile": 277, "metaphor": 333}


def shared_irfl_folder() -> Path | None:
    """../shared/data/irfl beside the clone; in a git worktree, beside the main checkout it belongs to."""
    candidates = [ROOT.parent / "shared" / "data" / "irfl"]
    git = ROOT / ".git"
    if git.is_file() and git.read_text().startswith("gitdir:"):  # .../main/.git/worktrees/NAME
        main_checkout = Path(git.read_text().split(":", 1)[1].strip()).parents[2]
        candidates.append(main_checkout.parent / "shared" / "data" / "irfl")
    return next((c for c in candidates if (c / "simile_understanding_task.csv").exists()), None)


REAL = shared_irfl_folder()
needs_real_csvs = pytest.mark.skipif(REAL is None, reason="the real IRFL CSVs are not in ../shared/data/irfl")


def real_rows() -> list[dict]:
    """Every row of the real CSVs with the uuid of its answer, read here without the loader's code."""
    rows = []
    for figure in FIGURES:
        with (REAL / f"{figure}_understanding_task.csv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                answer = json.loads(row["answer"])[0]
                uuid = {m["img"]: m["uuid"] for m in json.loads(row["images_metadata"])}[answer]
                rows.append({**row, "answer_image": answer, "uuid": uuid})
    return rows


def colour_of(index: int) -> tuple[int, int, int]:
    return 8 * (index % 32) + 4, 8 * (index // 32) + 4, 128


def index_of(images: torch.Tensor) -> torch.Tensor:
    """The generated image's index, read back from its (JPEG-blurred) solid colour."""
    red, green = images[:, 0].float().mean(dim=(1, 2)), images[:, 1].float().mean(dim=(1, 2))
    return torch.round((red - 4) / 8).long() + 32 * torch.round((green - 4) / 8).long()


def real_data_dir(tmp_path: Path, layout: str) -> tuple[Path, dict[str, int]]:
    """The real CSVs (as published, or turned into HuggingFace's layout: uuid answers, no metadata column)
    and one generated image per answer uuid at images/<uuid>.jpeg; uuid -> the index its colour encodes."""
    folder = tmp_path / "irfl"
    (folder / "images").mkdir(parents=True)
    rows = real_rows()
    index = {uuid: i for i, uuid in enumerate(sorted({r["uuid"] for r in rows}))}
    for uuid, i in index.items():
        Image.new("RGB", (8, 8), colour_of(i)).save(folder / "images" / f"{uuid}.jpeg")
    for figure in FIGURES:
        source = REAL / f"{figure}_understanding_task.csv"
        if layout == "github":
            shutil.copyfile(source, folder / source.name)
            continue
        ours = [r for r in rows if r["figurative_type"] == figure]
        columns = [c for c in ours[0] if c not in ("images_metadata", "answer_image", "uuid")]
        with (folder / f"{figure}_detection_task.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows({**r, "answer": json.dumps([r["uuid"]])} for r in ours)
    return tmp_path, index


@needs_real_csvs
@pytest.mark.parametrize("layout", ["github", "huggingface"])
def test_the_real_csvs_load_with_each_answer_paired_with_its_own_image(layout, tmp_path, capsys):
    data_dir, index = real_data_dir(tmp_path, layout)
    assert main(["data", "check", "irfl", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "  all       810 rows | classes 0:200 1:277 2:333" in out  # idiom, simile, metaphor
    data = TASKS.get("irfl")(data_dir=data_dir).load()
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    images = torch.cat([index_of(s.inputs["image"]) for s in (data.train, data.val, data.test)])
    rows = real_rows()
    expected = Counter((FIGURES.index(r["figurative_type"]), index[r["uuid"]]) for r in rows)
    assert Counter(zip(labels.tolist(), images.tolist())) == expected
    # Rows share a picture exactly where their answers name the same image (24 do, as the dataset reuses them).
    assert len(set(images.tolist())) == len({r["answer_image"] for r in rows}) == 786


@needs_real_csvs
def test_names_cut_from_answer_urls_would_collide_where_uuids_do_not():
    rows = real_rows()
    answers = {r["answer_image"]: r["uuid"] for r in rows}
    tails = Counter(PurePosixPath(urlparse(a).path).name for a in answers if a.startswith("http"))
    assert tails["maxresdefault.jpg"] > 1 and len(tails) < len(answers) - 37  # the old rule's collisions
    assert len(set(answers.values())) == len(answers)
    assert sum(not a.startswith("http") for a in answers) == 37  # base64 image data, all idioms


@pytest.mark.parametrize("layout", ["github", "huggingface"])
def test_each_caption_is_paired_with_its_true_image_in_either_layout(layout, tmp_path):
    write_irfl(tmp_path, layout=layout)
    data = TASKS.get("irfl")(data_dir=tmp_path).load()
    for split in (data.train, data.val, data.test):
        images, labels = split.inputs["image"], split.labels
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 64, 64)
        # True images are saturated in the channel of their figure; a distractor would read near 0 there.
        # Another figure's image has uniform noise there: its mean over the 480 source pixels reads at most
        # 127.5 + 4 x 74 / sqrt(480) = 141 (4 sd); 200 is midway from that to 255, leaving the true image's
        # JPEG error, clipped at 255 and so biased down by up to half its mean absolute error, ~55 of room.
        lit = images[torch.arange(len(labels)), labels].float().mean(dim=(1, 2))
        assert (lit > 200).all()
    tokens = data.train.inputs["caption"]
    assert tokens.dtype == torch.long and tokens.shape[1] == 16 and (tokens[:, 0] > 1).all()
    assert sum(len(s) for s in (data.train, data.val, data.test)) == 3 * 12


def test_rows_whose_answer_urls_end_alike_get_different_images(tmp_path):
    write_irfl(tmp_path)
    data = TASKS.get("irfl")(data_dir=tmp_path).load()
    images = torch.cat([s.inputs["image"] for s in (data.train, data.val, data.test)])
    distinct = {tuple(image.flatten().tolist()) for image in images}
    assert len(distinct) == 3 * 12 - 1  # every answer URL ends in maxresdefault.jpg; one image is shared


# -- broken files: one line naming the file and the row, exit code 2 ----------------------------------

def _simile_uuid(root: Path, row: int) -> str:
    with (root / "irfl" / "simile_understanding_task.csv").open(newline="") as handle:
        cells = list(csv.DictReader(handle))[row - 1]
    answer = json.loads(cells["answer"])[0]
    return {m["img"]: m["uuid"] for m in json.loads(cells["images_metadata"])}[answer]


def _rewrite_csv(root: Path, old: str, new: str) -> None:
    path = root / "irfl" / "simile_understanding_task.csv"
    path.write_text(path.read_text().replace(old, new, 1))


def _edit_cell(path: Path, row: int, column: str, value: str) -> None:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames, list(reader)
    rows[row - 1][column] = value
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


IRFL_BROKEN = {
    "missing file": (lambda root: (root / "irfl" / "metaphor_understanding_task.csv").unlink(),
                     "irfl/metaphor_understanding_task.csv missing"),
    "missing column": (lambda root: _rewrite_csv(root, "answer", "answers"), "missing column 'answer'"),
    "missing image": (lambda root: (root / "irfl" / "images" / f"{_simile_uuid(root, 4)}.jpeg").unlink(),
                      "image of row 4 of simile_understanding_task.csv not found"),
    "unreadable image": (lambda root: _truncate(root / "irfl" / "images" / f"{_simile_uuid(root, 3)}.jpeg"),
                         "image of row 3 of simile_understanding_task.csv is not a readable image"),
    "answer without metadata": (
        lambda root: _edit_cell(root / "irfl" / "simile_understanding_task.csv", 6, "answer",
                                json.dumps(["https://elsewhere.example/simile5/maxresdefault.jpg"])),
        "simile_understanding_task.csv: row 6: answer 'https://elsewhere.example/simile5/maxresdefault.jpg' "
        "names no image (images_metadata has no entry for it)"),
    "wrong labels": (lambda root: _rewrite_csv(root, ",simile,", ",hyperbole,"),
                     "row 1: figurative_type 'hyperbole' is not one of idiom, simile, metaphor"),
}


@pytest.mark.parametrize("case", list(IRFL_BROKEN))
def test_broken_irfl_files_are_one_line_naming_file_and_row(case, tmp_path, capsys):
    write_irfl(tmp_path)
    breaker, expected = IRFL_BROKEN[case]
    breaker(tmp_path)
    assert main(["data", "check", "irfl", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert expected in err[0] and "huggingface.co/datasets/lampent/IRFL" in err[0]


def test_an_answer_that_is_no_uuid_without_metadata_is_refused_by_row(tmp_path, capsys):
    folder = write_irfl(tmp_path, layout="huggingface")
    _edit_cell(folder / "metaphor_detection_task.csv", 5, "answer", json.dumps(["https://x.example/a.jpg"]))
    assert main(["data", "check", "irfl", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "metaphor_detection_task.csv: row 5: answer 'https://x.example/a.jpg' names no image" in err
    assert "no images_metadata column" in err and len(err.splitlines()) == 1


def test_list_tasks_finds_the_huggingface_layout(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    write_irfl(tmp_path, layout="huggingface")
    assert main(["list", "tasks", "--data-dir", str(tmp_path)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("irfl "))
    assert "yes" in line.split()


def test_base64_answers_resolve_through_their_metadata(tmp_path):
    folder = write_irfl(tmp_path)
    with (folder / "idiom_understanding_task.csv").open(newline="") as handle:
        first = next(csv.DictReader(handle))
    assert not json.loads(first["answer"])[0].startswith("http")  # the fixture's base64 answer
    data = TASKS.get("irfl")(data_dir=tmp_path).load()
    idioms = torch.cat([s.inputs["image"][s.labels == 0] for s in (data.train, data.val, data.test)])
    # Saturated red (channel 0) once decoded: 200 lies midway between 255 and what an unsaturated channel's
    # noise reads, 141 at 4 sd (as in the pairing test above).
    assert len(idioms) == 12 and (idioms[:, 0].float().mean(dim=(1, 2)) > 200).all()
    assert np.isfinite(idioms.float().numpy()).all()
