"""The FactorCL benchmarks' loaders, on small files in the public formats, good and broken (IRFL: test_irfl)."""

import pickle
import random

import numpy as np
import pytest
import torch

from harness.api.catalog import TASKS
from harness.cli import main
from tests.datafiles import AFFECT, AFFECT_ROWS, MIMIC_ROWS, write_affect, write_irfl, write_mimic

BENCHMARKS = ["mosi", "mosei", "ur-funny", "mustard", "mimic", "irfl"]


def write(task: str, root):
    if task in AFFECT:
        return write_affect(root, task)
    return write_mimic(root) if task == "mimic" else write_irfl(root)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("task_name", BENCHMARKS)
def test_data_check_reports_rows_shapes_and_classes(task_name, tmp_path, capsys):
    write(task_name, tmp_path)
    assert main(["data", "check", task_name, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    task = TASKS.get(task_name)()
    for modality in task.modalities:
        assert f"{modality.name}{list(modality.shape)}" in out
    assert all(f"  {split} " in out for split in ("train", "val", "test")) and out.rstrip().endswith("as expected")


@pytest.mark.parametrize("task_name", BENCHMARKS)
def test_list_tasks_says_whether_the_files_are_there(task_name, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    assert main(["list", "tasks", "--data-dir", str(tmp_path)]) == 0
    assert _row(capsys.readouterr().out, task_name)[5].startswith("no (")
    write(task_name, tmp_path)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))  # the variable stands in for --data-dir
    assert main(["list", "tasks"]) == 0
    assert _row(capsys.readouterr().out, task_name)[5] == "yes"


def _row(table: str, task: str) -> list[str]:
    line = next(ln for ln in table.splitlines() if ln.startswith(f"{task} "))
    return [cell for cell in line.split("  ") if cell.strip()]


@pytest.mark.parametrize("task_name", ["mosi", "mosei"])
def test_sentiment_is_binarized_at_zero_and_textless_entries_dropped(task_name, tmp_path):
    path = write_affect(tmp_path, task_name)
    raw = pickle.loads(path.read_bytes())["train"]
    assert raw["labels"].shape == (AFFECT_ROWS["train"], 1, 1)  # as MultiBench's MOSI/MOSEI pickles hold them
    data = TASKS.get(task_name)(data_dir=tmp_path).load()
    kept = raw["text"].reshape(len(raw["text"]), -1).sum(axis=1) != 0  # MultiBench's drop_entry
    assert len(data.train) == kept.sum() == AFFECT_ROWS["train"] - 1
    sentiment = raw["labels"].reshape(-1)[kept]
    neutral = torch.from_numpy(sentiment == 0.0)
    assert neutral.sum() >= 3 and (data.train.labels[neutral] == 1).all()  # exactly 0 counts as positive
    assert torch.equal(data.train.labels, torch.from_numpy((sentiment >= 0).astype(np.int64)))
    assert torch.equal(data.train.inputs["vision"], torch.from_numpy(raw["vision"][kept]))


def test_steps_before_the_first_word_are_padding_in_vision_too(tmp_path):
    path = write_affect(tmp_path, "mosi")
    content = pickle.loads(path.read_bytes())
    train = content["train"]
    padded = np.flatnonzero(np.abs(train["text"][:, 0]).sum(axis=1) == 0)[0]  # an entry with front padding
    first_word = int(np.argmax(np.abs(train["text"][padded]).sum(axis=1) > 0))
    train["vision"][padded, :first_word] = 5.0  # non-zero vision where MultiBench's aligned loader crops
    path.write_bytes(pickle.dumps(content))
    vision = TASKS.get("mosi")(data_dir=tmp_path).load().train.inputs["vision"][padded]
    assert first_word > 0 and (vision[:first_word] == 0).all()
    assert torch.equal(vision[first_word:], torch.from_numpy(train["vision"][padded, first_word:]))


@pytest.mark.parametrize("task_name", ["ur-funny", "mustard"])
@pytest.mark.parametrize("coding", ["0/1", "-1/1"])
def test_binary_labels_map_to_zero_and_one(task_name, coding, tmp_path):
    raw = (np.arange(12) % 2).astype(np.float32).reshape(12, 1)
    if coding == "-1/1":
        raw = 2 * raw - 1
    write_affect(tmp_path, task_name, arrays={("test", "labels"): raw})
    labels = TASKS.get(task_name)(data_dir=tmp_path).load().test.labels
    assert torch.equal(labels, torch.from_numpy((raw.reshape(-1)[:-1] > 0).astype(np.int64)))  # last: no text


def test_mimic_reads_icd9_group_7_and_standardizes_with_training_statistics(tmp_path):
    content = pickle.loads(write_mimic(tmp_path).read_bytes())
    assert content["adm_labels_all"].shape[1] == 6  # MultiBench reads its columns 1-5
    data = TASKS.get("mimic")(data_dir=tmp_path).load()
    assert (len(data.train), len(data.val), len(data.test)) == (48, 6, 6)
    train_static = data.train.inputs["static"]
    # Standardized in float64, stored in float32 (eps32 / 2 each), then reduced over 48 rows in float32:
    # at most 48 eps32 x mean |z| (~1) = 5.7e-6 off, inside 1e-5 (plus allclose's rtol 1e-5 at the std's 1);
    # a ddof=1 std would be off by 1 - sqrt(47/48) = 0.01.
    assert torch.allclose(train_static.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(train_static.std(0, unbiased=False), torch.ones(5), atol=1e-5)
    # Test stats not used: 6 test rows under the training statistics have means ~ N(0, 1/6) (sd 0.41) per
    # feature, all five within 1e-3 with odds ~1e-13; standardized on their own they would be 0 to rounding.
    assert not torch.allclose(data.test.inputs["static"].mean(0), torch.zeros(5), atol=1e-3)
    assert torch.isfinite(data.train.inputs["timeseries"]).all()  # the NaN became 0 before standardizing
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels]).sort().values
    assert torch.equal(labels, torch.from_numpy(np.sort(content["y_icd9"][:, 7]).astype(np.int64)))
    again = TASKS.get("mimic")(data_dir=tmp_path).load()
    assert data.fingerprint() == again.fingerprint()  # the split is fixed


def multibench_mimic_rows(n: int) -> dict[str, list[int]]:
    """MultiBench's datasets/mimic/get_data.py split, restated: shuffle the list of row tuples with
    Python's global `random` seeded 10, then the validation, test and train slices."""
    state = random.getstate()
    try:
        datasets = [(f"static{i}", f"series{i}", i) for i in range(n)]
        random.seed(10)
        random.shuffle(datasets)
    finally:
        random.setstate(state)
    ids = [row[2] for row in datasets]
    return {"val": ids[0:n // 10], "test": ids[n // 10:n // 5], "train": ids[n // 5:]}


@pytest.mark.parametrize("rows", [MIMIC_ROWS, 137])
def test_mimic_splits_are_multibenchs_row_for_row(rows, tmp_path):
    write_mimic(tmp_path, rows=rows)
    data = TASKS.get("mimic")(data_dir=tmp_path).load()
    expected = multibench_mimic_rows(rows)
    train_ids = np.asarray(expected["train"], dtype=np.float64)
    mean, std = train_ids.mean(), train_ids.std()  # static feature 0 is the row id, standardized on train
    for name in ("train", "val", "test"):
        ids = getattr(data, name).inputs["static"][:, 0].double() * std + mean
        # ids < 137 through float32 standardizing: off by ~eps32 x 137 = 2e-5, rounding absorbs up to 0.5
        assert torch.round(ids).long().tolist() == expected[name], name


# -- broken files: one line, exit code 2, nothing trained ---------------------------------------------

def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


AFFECT_BROKEN = {
    "missing file": (lambda root: None, "mosi_data.pkl missing"),
    "wrong key": (lambda root: write_affect(root, "mosi", arrays={("train", "vision"): None}),
                  "missing key 'vision' in split 'train'"),
    "wrong shape": (lambda root: write_affect(root, "mosi", arrays={("valid", "vision"): np.zeros((12, 50, 35))}),
                    "'valid/vision' has shape (12, 50, 35), expected (12, 50, 20)"),
    "truncated": (lambda root: truncate(write_affect(root, "mosi")), "not a readable pickle (truncated)"),
    "wrong labels": (lambda root: write_affect(root, "mosi", arrays={("test", "labels"): np.full((12, 1), 7.0)}),
                     "'test/labels' has values outside the sentiment range [-3, 3]"),
}


@pytest.mark.parametrize("case", list(AFFECT_BROKEN))
def test_broken_affect_pickle_is_one_line_naming_file_problem_and_source(case, tmp_path, capsys):
    breaker, expected = AFFECT_BROKEN[case]
    breaker(tmp_path)
    assert main(["data", "check", "mosi", "--data-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert expected in line and "mosi_data.pkl" in line and "drive.google.com" in line


def test_binary_label_set_other_than_zero_one_or_minus_one_one_is_refused(tmp_path, capsys):
    write_affect(tmp_path, "ur-funny", arrays={("train", "labels"): np.full((24, 1), 2.0)})
    assert main(["data", "check", "ur-funny", "--data-dir", str(tmp_path)]) == 2
    assert "humor.pkl: 'train/labels' has values 2 outside the expected set {-1, 0, 1}" in one_error_line(capsys)


MIMIC_BROKEN = {
    "missing file": (lambda root: None, "im.pk missing"),
    "wrong key": (lambda root: write_mimic(root, drop="y_icd9"), "missing key 'y_icd9'"),
    "wrong shape": (lambda root: write_mimic(root, replace={"ep_tdata": np.zeros((MIMIC_ROWS, 24, 11))}),
                    f"'ep_tdata' has shape ({MIMIC_ROWS}, 24, 11), expected (N, 24, 12)"),
    "truncated": (lambda root: truncate(write_mimic(root)), "not a readable pickle (truncated)"),
    "wrong labels": (lambda root: write_mimic(root, replace={"y_icd9": np.full((MIMIC_ROWS, 20), 3.0)}),
                     "'y_icd9' column 7 has values 3 outside the expected set {0, 1}"),
}


@pytest.mark.parametrize("case", list(MIMIC_BROKEN))
def test_broken_mimic_pickle_is_one_line(case, tmp_path, capsys):
    breaker, expected = MIMIC_BROKEN[case]
    breaker(tmp_path)
    assert main(["data", "check", "mimic", "--data-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert expected in line and "im.pk" in line and "physionet" in line


def test_a_run_on_bad_data_stops_before_training(harness_run, tmp_path, capsys):
    truncate(write_affect(tmp_path, "mustard"))
    assert harness_run("--method", "clip", "--task", "mustard", "--data-dir", str(tmp_path), "--seeds", "1") == 2
    assert "sarcasm.pkl: not a readable pickle" in one_error_line(capsys)
    assert not (harness_run.results / "records").exists()
