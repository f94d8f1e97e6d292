"""The FactorCL benchmarks' loaders, on small files in the exact public formats, good and broken."""

import pickle

import numpy as np
import pytest
import torch

from harness.catalog import TASKS
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
    data = TASKS.get(task_name)(data_dir=tmp_path).load()
    kept = np.abs(raw["text"]).reshape(len(raw["text"]), -1).sum(axis=1) > 0
    assert len(data.train) == kept.sum() == AFFECT_ROWS["train"] - 1
    expected = (raw["labels"].reshape(-1)[kept] >= 0).astype(np.int64)
    assert torch.equal(data.train.labels, torch.from_numpy(expected))
    assert torch.equal(data.train.inputs["vision"], torch.from_numpy(raw["vision"][kept]))


def test_binary_labels_given_as_minus_one_and_one_map_to_zero_and_one(tmp_path):
    path = write_affect(tmp_path, "mustard")
    raw = pickle.loads(path.read_bytes())["test"]["labels"].reshape(-1)[:-1]  # the last entry has no text
    labels = TASKS.get("mustard")(data_dir=tmp_path).load().test.labels
    assert set(np.unique(raw)) == {-1.0, 1.0}
    assert torch.equal(labels, torch.from_numpy((raw > 0).astype(np.int64)))


def test_mimic_reads_icd9_group_7_and_standardizes_with_training_statistics(tmp_path):
    content = pickle.loads(write_mimic(tmp_path).read_bytes())
    data = TASKS.get("mimic")(data_dir=tmp_path).load()
    assert (len(data.train), len(data.val), len(data.test)) == (48, 6, 6)
    train_static = data.train.inputs["static"]
    assert torch.allclose(train_static.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(train_static.std(0, unbiased=False), torch.ones(5), atol=1e-4)
    assert not torch.allclose(data.test.inputs["static"].mean(0), torch.zeros(5), atol=1e-3)  # test stats not used
    assert torch.isfinite(data.train.inputs["timeseries"]).all()  # the NaN became 0 before standardizing
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels]).sort().values
    assert torch.equal(labels, torch.from_numpy(np.sort(content["y_icd9"][:, 7]).astype(np.int64)))
    again = TASKS.get("mimic")(data_dir=tmp_path).load()
    assert data.fingerprint() == again.fingerprint()  # the split is fixed
    assert len(data.train) + len(data.val) + len(data.test) == MIMIC_ROWS


def test_irfl_pairs_each_caption_with_its_true_image_and_labels_the_figure(tmp_path):
    write_irfl(tmp_path)
    data = TASKS.get("irfl")(data_dir=tmp_path).load()
    for split in (data.train, data.val, data.test):
        images, labels = split.inputs["image"], split.labels
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 64, 64)
        # The fixture's true images are saturated in the channel of their figure, the distractors are not.
        lit = images[torch.arange(len(labels)), labels].float().mean(dim=(1, 2))
        assert (lit > 200).all()  # JPEG blurs the 255s a little; a distractor would read near 0
    tokens = data.train.inputs["caption"]
    assert tokens.dtype == torch.long and tokens.shape[1] == 16 and (tokens[:, 0] > 1).all()


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


def _rewrite_csv(root, old: str, new: str):
    path = root / "irfl" / "simile_understanding_task.csv"
    path.write_text(path.read_text().replace(old, new))


IRFL_BROKEN = {
    "missing file": (lambda root: (root / "irfl" / "metaphor_understanding_task.csv").unlink(),
                     "irfl/metaphor_understanding_task.csv missing"),
    "wrong key": (lambda root: _rewrite_csv(root, "answer", "answers"), "missing column 'answer'"),
    "missing image": (lambda root: (root / "irfl" / "images" / "simile3.jpeg").unlink(),
                      "simile3.jpeg: image named in simile_understanding_task.csv not found"),
    "truncated image": (lambda root: truncate(root / "irfl" / "images" / "idiom2.jpeg"),
                        "idiom2.jpeg: not a readable image"),
    "wrong labels": (lambda root: _rewrite_csv(root, ",simile,", ",hyperbole,"),
                     "figurative_type 'hyperbole' is not one of idiom, simile, metaphor"),
}


@pytest.mark.parametrize("case", list(IRFL_BROKEN))
def test_broken_irfl_files_are_one_line(case, tmp_path, capsys):
    write_irfl(tmp_path)
    breaker, expected = IRFL_BROKEN[case]
    breaker(tmp_path)
    assert main(["data", "check", "irfl", "--data-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert expected in line and "huggingface.co/datasets/lampent/IRFL" in line


def test_a_run_on_bad_data_stops_before_training(harness_run, tmp_path, capsys):
    truncate(write_affect(tmp_path, "mustard"))
    assert harness_run("--method", "clip", "--task", "mustard", "--data-dir", str(tmp_path), "--seeds", "1") == 2
    assert "sarcasm.pkl: not a readable pickle" in one_error_line(capsys)
    assert not (harness_run.results / "records").exists()
