"""The synthetic variants: same generator, nonlinear labels that read only the latents they name."""

import math
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
    # P(label 1) = 1/2: shared's XOR of two signs of symmetric means; unique's median over all drawn rows
    # (the training rows are a sample of those, hypergeometric, narrower than binomial). Within 4 binomial
    # sd over the 24000 training rows, 4 sqrt(1/4 / 24000) = 0.013, of 1/2.
    assert abs(variant.train.labels.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 24000)


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
    # The logistic loss is convex and the label unchanged by x -> -x, with balanced classes: the population
    # fit is w = 0, b = 0, accuracy 1/2. Two noises of like size: the test score's, binomial over the 1500
    # test rows, and the 3000-row fit's noise halfplane's; 1/2 + 4 sd of both, 4 sqrt(2 x 1/4 / 1500) = 0.073.
    # (A chosen halfplane reaches 0.62-0.65 on these labels; the bound is on what logistic regression finds.)
    assert model.score(read[3000:], labels[3000:]) < 0.5 + 4 * math.sqrt(2 * 0.25 / 1500)
    # whereas the default label is linear in them: a halfplane in the 22 latents, so the best linear
    # accuracy is 1; a fit on 3000 separable rows errs ~(d + 1)/n = 23/3000 (the max-margin leave-one-out
    # bound), doubled for logistic regression's L2 shrinkage: 0.015, and 4 binomial sd over the 1500
    # test rows at that error, 4 sqrt(0.015 x 0.985 / 1500) = 0.013, leaves > 0.972.
    default = replace(Synthetic.setting, n_train_test=4000, n_val=500)
    _, latents, labels = type("Small", (Synthetic,), {"setting": default})().generate()
    read = np.concatenate(list(latents.values()), axis=1)
    assert LogisticRegression(max_iter=500).fit(read[:3000], labels[:3000]).score(read[3000:], labels[3000:]) > 0.972
