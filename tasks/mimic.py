"""MIMIC-III as MultiBench packages it: `im.pk`, a pickled dict of numpy arrays.

Keys: `ep_tdata` (N, 24, 12) hourly measurements, `adm_features_all` (N, 5)
static admission features, `y_icd9` (N, 20) binary ICD-9 group labels and
`adm_labels_all` (mortality, unused here). FactorCL's task is ICD-9 group 7
(codes 460-519, respiratory diseases). The rows are split exactly as
MultiBench's loader splits them (Python's `random`, seed 10; validation, test,
train in that order), so our test rows are MultiBench's. Both modalities are
standardized per feature with the training split's statistics (MultiBench
uses the whole file's, which leaks the test split into the inputs).
Non-finite values are set to 0 first, as MultiBench does.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.api.task import DataSource, Modality, Task, TaskData, TensorSplit
from tasks.common.augment import augment_by_kind, static_features
from tasks.common.datafiles import DataFiles, finite, multibench_split

FILENAME = "im.pk"
HOURS, SERIES = 24, 12
STATIC = 5
ICD9_GROUPS = 20
ICD9_TASK = 7  # 460-519: diseases of the respiratory system
SPLIT_SEED = 10  # MultiBench's `random.seed(10)` before it shuffles the rows
INSTRUCTIONS = ("MIMIC-III needs PhysioNet credentialed access (https://physionet.org/content/mimiciii/); "
                "MultiBench's README (https://github.com/pliang279/MultiBench) explains how to request its "
                "processed im.pk; see docs/benchmarks.md")


class Mimic(Task):
    name = "mimic"
    version = "2"  # 2: MultiBench's own row split (1 drew its own permutation)
    suite = "multibench"
    description = "MIMIC-III (MultiBench im.pk): 24x12 time series + 5 static features, ICD-9 460-519."
    label_kind = "binary"
    default_epochs = 20
    default_batch_size = 128

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return (Modality("static", "tabular", (STATIC,), encoder="mlp"),
                Modality("timeseries", "timeseries", (HOURS, SERIES), encoder="gru"))

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def source(self) -> DataSource:
        return DataSource("files", files=(FILENAME,), instructions=INSTRUCTIONS)

    def identity(self):
        encoders = {m.name: m.encoder for m in self.modalities}
        return super().identity() | {"params": {**self.params, "icd9_column": ICD9_TASK, "split": "multibench",
                                                "split_seed": SPLIT_SEED, "encoders": encoders}}

    def load(self) -> TaskData:
        files = DataFiles(self.name, self.data_dir, INSTRUCTIONS)
        path = files.path(FILENAME)
        content = files.read_pickle(FILENAME)
        series = files.array(path, files.key(path, content, "ep_tdata"), "'ep_tdata'", (None, HOURS, SERIES))
        n = len(series)
        static = files.array(path, files.key(path, content, "adm_features_all"), "'adm_features_all'", (n, STATIC))
        icd9 = files.array(path, files.key(path, content, "y_icd9"), "'y_icd9'", (n, ICD9_GROUPS))
        labels = icd9[:, ICD9_TASK]
        files.label_set(path, labels, f"'y_icd9' column {ICD9_TASK}", (0, 1))
        rows = multibench_split(n, SPLIT_SEED)
        series, static = finite(series), finite(static)
        series = standardized(series, series[rows["train"]].reshape(-1, SERIES))
        static = standardized(static, static[rows["train"]])

        def split(name: str) -> TensorSplit:
            take = rows[name]
            return TensorSplit({"static": torch.from_numpy(static[take]), "timeseries": torch.from_numpy(series[take])},
                               torch.from_numpy(labels[take].astype(np.int64)))

        return TaskData(train=split("train"), val=split("val"), test=split("test"))

    def augment(self, modality, x):
        # FactorCL augments MIMIC's static features with noise or mixup, its series like other sequences.
        return static_features(x) if modality == "static" else augment_by_kind(self.modality(modality).kind, x)


def standardized(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(values - mean) / std per last-axis feature, statistics from `reference`; constant features stay 0."""
    mean = reference.mean(axis=0)
    std = reference.std(axis=0)
    return ((values - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
