"""FactorCL's synthetic data: two modalities built from shared and unique latents.

Gaussian latents w_s (shared), w_1, w_2 (unique), each N(0, 0.5 I);
x_1 = [w_s, w_1] T_1 and x_2 = [w_s, w_2] T_2 with fixed random matrices T_i
(entries uniform in [0, 1)) mapping to `input_dim` dimensions. The label is
1[mean of the latent components it reads >= 0]; which components it reads
sets how much task-relevant information is shared or unique.

Two registered variants keep the generator and change only the label, to a
NONLINEAR function of the latents it reads: on the default setting the label
is linear in the latents, so a linear probe on raw inputs or untrained
encoders already nearly saturates it and leaves little for training to show.

The paper's notebook draws N = 30000 with an 80/20 train/test split; a
validation split of `n_val` rows is drawn beside them from the same generator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from harness.api.task import Modality, Task, TaskData, TensorSplit
from tasks.common.augment import augment_by_kind

LATENTS = ("shared", "unique1", "unique2")


@dataclass(frozen=True)
class SyntheticSetting:
    shared_dim: int = 10
    unique_dims: tuple[int, int] = (6, 6)
    input_dim: int = 100
    n_train_test: int = 30000
    n_val: int = 3000
    train_fraction: float = 0.8
    label_reads: tuple[str, ...] = LATENTS
    latent_variance: float = 0.5
    generator_seed: int = 0


class Synthetic(Task):
    name = "synthetic"
    version = "1"
    suite = "synthetic"
    description = "FactorCL's default synthetic setting: 10 shared + 6/6 unique latents, label reads all of them."
    label_kind = "binary"
    default_epochs = 6
    default_batch_size = 256
    setting = SyntheticSetting()
    extra_symbols = {"shared": "ws", "unique1": "w1", "unique2": "w2"}  # the paper's names for the latents

    @property
    def modalities(self):
        return (Modality("x1", "tabular", (self.setting.input_dim,)),
                Modality("x2", "tabular", (self.setting.input_dim,)))

    @property
    def num_classes(self) -> int:
        return 2

    def identity(self):
        return super().identity() | {"params": {"setting": self.setting.__dict__}}

    def label(self, latents: dict[str, np.ndarray]) -> np.ndarray:
        """1[mean of the read components >= 0]; variants override this with other functions."""
        read = np.concatenate([latents[k] for k in self.setting.label_reads], axis=1)
        return (read.mean(axis=1) >= 0).astype(np.int64)

    def generate(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        s = self.setting
        rng = np.random.default_rng(s.generator_seed)
        n = s.n_train_test + s.n_val
        std = np.sqrt(s.latent_variance)
        latents = {"shared": rng.normal(0, std, (n, s.shared_dim)),
                   "unique1": rng.normal(0, std, (n, s.unique_dims[0])),
                   "unique2": rng.normal(0, std, (n, s.unique_dims[1]))}
        t1 = rng.uniform(0, 1, (s.shared_dim + s.unique_dims[0], s.input_dim))
        t2 = rng.uniform(0, 1, (s.shared_dim + s.unique_dims[1], s.input_dim))
        inputs = {"x1": np.concatenate([latents["shared"], latents["unique1"]], axis=1) @ t1,
                  "x2": np.concatenate([latents["shared"], latents["unique2"]], axis=1) @ t2}
        return inputs, latents, self.label(latents)

    def load(self) -> TaskData:
        inputs, latents, labels = self.generate()
        n_train = int(self.setting.n_train_test * self.setting.train_fraction)
        bounds = {"train": slice(0, n_train), "test": slice(n_train, self.setting.n_train_test),
                  "val": slice(self.setting.n_train_test, None)}

        def split(rows: slice) -> TensorSplit:
            return TensorSplit({k: torch.from_numpy(v[rows]).float() for k, v in inputs.items()},
                               torch.from_numpy(labels[rows]),
                               {k: torch.from_numpy(v[rows]).float() for k, v in latents.items()})

        return TaskData(train=split(bounds["train"]), val=split(bounds["val"]), test=split(bounds["test"]))

    def augment(self, modality, x):
        return augment_by_kind(self.modality(modality).kind, x)


def _component_mean(latent: np.ndarray) -> np.ndarray:
    return latent.mean(axis=1)


class SyntheticShared(Synthetic):
    name = "synthetic-shared"
    version = "1"
    description = ("Label reads only shared latents, nonlinearly: XOR of the signs of the means of the two halves "
                   "of w_s. Either modality alone suffices; no linear probe on the latents can.")
    setting = replace(Synthetic.setting, label_reads=("shared",))
    inputs_of = "synthetic"  # the same generator, inputs and views; only the label differs

    def label(self, latents: dict[str, np.ndarray]) -> np.ndarray:
        shared = latents["shared"]
        half = shared.shape[1] // 2
        first, second = _component_mean(shared[:, :half]), _component_mean(shared[:, half:])
        return ((first >= 0) != (second >= 0)).astype(np.int64)


class SyntheticUnique(Synthetic):
    name = "synthetic-unique"
    version = "1"
    description = ("Label reads only unique latents, nonlinearly: 1[|mean w_1| + |mean w_2| >= its median]. "
                   "Each modality holds part of it; shared latents are irrelevant.")
    setting = replace(Synthetic.setting, label_reads=("unique1", "unique2"))
    inputs_of = "synthetic"

    def label(self, latents: dict[str, np.ndarray]) -> np.ndarray:
        size = sum(np.abs(_component_mean(latents[k])) for k in self.setting.label_reads)
        # The median over every drawn row balances the classes; it is part of the generator,
        # fixed by its seed, and no model sees it.
        return (size >= np.median(size)).astype(np.int64)
