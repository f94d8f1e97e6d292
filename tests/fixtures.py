"""Tiny tasks and deliberately misbehaving methods, registered only for the tests."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import torch

from harness.api import distributed
from harness.api.errors import HarnessError
from harness.api.method import AssumptionCheck, Method
from harness.api.task import Modality, Task, TaskData, TensorSplit
from methods.clip import CLIP
from methods.common.encoders import ModalityEncoders
from tasks.synthetic import Synthetic


class TinySynthetic(Synthetic):
    """The synthetic generator at a few hundred rows, so a full `harness run` takes seconds."""

    name = "tiny-synthetic"
    default_epochs = 1
    default_batch_size = 64
    setting = replace(Synthetic.setting, n_train_test=400, n_val=100, input_dim=20)


OTHER_LABELS_ON_RANK_ENV = "OTHER_LABELS_ON_RANK"


class OtherLabelsOnRank(TinySynthetic):
    """tiny-synthetic, but the rank $OTHER_LABELS_ON_RANK names (none unless set) loads its training labels
    shuffled: a node whose copy of the data differs from rank 0's."""

    name = "other-labels-on-rank"

    def load(self) -> TaskData:
        data = super().load()
        if os.environ.get("RANK") is not None and os.environ.get("RANK") == os.environ.get(OTHER_LABELS_ON_RANK_ENV):
            train = data.train
            shuffled = train.labels[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))]
            data = replace(data, train=replace(train, labels=shuffled))
        return data


class SingleModality(Task):
    """One tabular modality and no augmentations: methods needing two modalities cannot run."""

    name = "single-modality"
    suite = "tests"
    default_epochs = 1
    default_batch_size = 32

    @property
    def modalities(self):
        return (Modality("x", "tabular", (4,)),)

    @property
    def num_classes(self):
        return 2

    def load(self) -> TaskData:
        g = torch.Generator().manual_seed(0)

        def split(n: int) -> TensorSplit:
            x = torch.randn(n, 4, generator=g)
            return TensorSplit({"x": x}, (x[:, 0] > 0).long())

        return TaskData(split(64), split(32), split(32))


class DivergesOnOddSeeds(Method):
    """Loss turns NaN whenever the harness seeded the run with an odd seed."""

    name = "diverges-on-odd-seeds"
    display_name = "Diverges"

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoders = ModalityEncoders(task, 8)

    def loss(self, batch):
        value = self.encoders.joint(batch.inputs).pow(2).mean()
        return value * float("nan") if torch.initial_seed() % 2 else value

    def encode(self, inputs):
        return self.encoders.joint(inputs)


class RefusesItsInputWhileTuning(DivergesOnOddSeeds):
    """Raises the one-line error of bad input (as a guide file that is missing does) from inside a tuning
    trial, while the environment says the input is bad: a rerun after the fix must find its trial untouched."""

    name = "refuses-its-input-while-tuning"
    display_name = "Refuses its input"
    BAD_INPUT_ENV = "HARNESS_TEST_BAD_INPUT"

    def loss(self, batch):
        if os.environ.get(self.BAD_INPUT_ENV):
            raise HarnessError("the test's input file is missing; write it there")
        return self.encoders.joint(batch.inputs).pow(2).mean()


class FailsItsCheckOnOddSeeds(DivergesOnOddSeeds):
    """Trains fine, but reports a violated assumption whenever the harness seeded it with an odd seed."""

    name = "fails-check-on-odd-seeds"
    display_name = "Fails check"

    def loss(self, batch):
        return self.encoders.joint(batch.inputs).pow(2).mean()

    def check_assumptions(self, history):
        held = torch.initial_seed() % 2 == 0
        return [AssumptionCheck("even_seed", held, f"seed parity {torch.initial_seed() % 2}", float(len(history)))]


class OutOfMemoryOnLargeBatches(DivergesOnOddSeeds):
    """Raises torch's out-of-memory error on batches over 32 rows, as a device too small for them would."""

    name = "oom-on-large-batches"
    display_name = "Out of memory"

    def loss(self, batch):
        if len(batch.labels) > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                         "capacity of 1 GiB of which 0 bytes is free.")
        return self.encoders.joint(batch.inputs).pow(2).mean()


class DiesOnRank1(DivergesOnOddSeeds):
    """Rank 1 of a data-parallel run is killed (SIGKILL, as the kernel's OOM killer or a lost node would)
    at its second step."""

    name = "dies-on-rank-1"
    display_name = "Dies on rank 1"

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.steps = 0

    def loss(self, batch):
        self.steps += 1
        if distributed.rank() == 1 and self.steps == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return distributed.gather(self.encoders.joint(batch.inputs)).pow(2).mean()


SLOW_CLIP_PAUSE_ENV = "SLOW_CLIP_PAUSE_S"


class SlowCLIP(CLIP):
    """CLIP, paused $SLOW_CLIP_PAUSE_S seconds per batch (none unless set; 0.15 makes an epoch of tiny-synthetic
    about a second) and nothing else: a test can see a trial or seed in progress in the storage and kill its
    worker there. Its numbers are CLIP's, with or without the pause."""

    name = "slow-clip"
    display_name = "Slow CLIP"

    def loss(self, batch):
        time.sleep(float(os.environ.get(SLOW_CLIP_PAUSE_ENV, "0")))
        return super().loss(batch)


class ThreadSensitiveCLIP(CLIP):
    """CLIP plus the square of the batch's mean |z_i z_j| over every row's pairs of embedding entries: a mean of
    B x D x D products, large enough that torch splits it among its threads and adds their partial sums, so
    training follows the thread count in its last bits (CLIP alone on tiny-synthetic does not). Its record
    carries the sum of its trained weights (a check that always holds), where any such difference shows."""

    name = "thread-sensitive-clip"
    display_name = "Thread-sensitive CLIP"

    def loss(self, batch):
        out = super().loss(batch)
        z = self.encoders.joint(batch.inputs)
        out["loss"] = out["loss"] + (z.unsqueeze(2) * z.unsqueeze(1)).abs().mean().square()
        return out

    def check_assumptions(self, history):
        total = sum(p.detach().double().sum().item() for p in self.parameters())
        return [AssumptionCheck("weights_sum", True, f"trained weights sum to {total!r}", total)]


TEST_COMMIT = "0123456789ab"  # what the tests' harness reports as its commit: a clean one

TEST_TASKS = {"tiny-synthetic": "tests.fixtures:TinySynthetic", "single-modality": "tests.fixtures:SingleModality",
              "other-labels-on-rank": "tests.fixtures:OtherLabelsOnRank",
              "hidden-signal": "tests.hidden_signal:HiddenSignal"}
# Registered by tests/conftest.py for every test file alike, so that a file collects the same cases whether it
# runs alone or beside the others (the separate `harness run` processes of tests/run_harness.py do not need them).
TEST_IMAGE_TASKS = {"shapes-captions-tiny": "tests.image_tasks:TinyShapesCaptions",
                    "shapes-superclasses-tiny": "tests.image_tasks:TinyShapeSuperclasses"}
TEST_METHODS = {"diverges-on-odd-seeds": "tests.fixtures:DivergesOnOddSeeds",
                "refuses-its-input-while-tuning": "tests.fixtures:RefusesItsInputWhileTuning",
                "fails-check-on-odd-seeds": "tests.fixtures:FailsItsCheckOnOddSeeds",
                "oom-on-large-batches": "tests.fixtures:OutOfMemoryOnLargeBatches",
                "dies-on-rank-1": "tests.fixtures:DiesOnRank1", "slow-clip": "tests.fixtures:SlowCLIP",
                "thread-sensitive-clip": "tests.fixtures:ThreadSensitiveCLIP"}
