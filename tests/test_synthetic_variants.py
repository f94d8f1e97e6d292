"""The synthetic variants: same generator, nonlinear labels that read only the latents they name."""

from dataclasses import replace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from harness.api.catalog import TASKS
from tasks.synthetic import Synthetic, SyntheticShared, SyntheticUnique

VARIANTS = [SyntheticShared, SyntheticUnique]


def small(cls):
    class Small(cls):
        setting = replace(cls.setting, n_train_test=4000, n_val=500)

    return Small()


@pytest.mark.parametrize("cls", VARIANTS)
def test_variants_are_registered_with_a_description(cls):
    assert TASKS.get(cls.name) is cls and "nonlinear" in cls.description


@pytest.mark.parametrize("cls", VARIANTS)
def test_variants_keep_the_default_inputs_and_balance_their_labels(cls):
    variant, default = cls().load(), Synthetic().load()
    assert np.array_equal(variant.train.inputs["x1"].numpy(), default.train.inputs["x1"].numpy())
    assert 0.47 < variant.train.labels.float().mean() < 0.53


@pytest.mark.parametrize("cls", VARIANTS)
def test_variant_labels_ignore_the_latents_they_do_not_read(cls):
    task = small(cls)
    inputs, latents, labels = task.generate()
    rng = np.random.default_rng(0)
    for unread in set(latents) - set(task.setting.label_reads):
        latents[unread] = rng.permutation(latents[unread])
    assert np.array_equal(task.label(latents), labels)


@pytest.mark.parametrize("cls", VARIANTS)
def test_no_linear_function_of_the_read_latents_predicts_the_label(cls):
    """What makes raw features and untrained encoders fall short: the label is nonlinear in the latents."""
    task = small(cls)
    _, latents, labels = task.generate()
    read = np.concatenate([latents[k] for k in task.setting.label_reads], axis=1)
    model = LogisticRegression(max_iter=500).fit(read[:3000], labels[:3000])
    assert model.score(read[3000:], labels[3000:]) < 0.6
    # whereas the default label is linear in them
    default = replace(Synthetic.setting, n_train_test=4000, n_val=500)
    _, latents, labels = type("Small", (Synthetic,), {"setting": default})().generate()
    read = np.concatenate(list(latents.values()), axis=1)
    assert LogisticRegression(max_iter=500).fit(read[:3000], labels[:3000]).score(read[3000:], labels[3000:]) > 0.95
