"""Requirements check everything they describe, each with the reason the leaderboard prints."""

import pytest

from harness.api.catalog import METHODS, TASKS
from harness.api.method import Requirements
from harness.api.task import Modality
from tests.fixtures import SingleModality
from tests.image_tasks import TinyShapesCaptions


class ProbeLabelsOnly(SingleModality):
    labels_for_training = False


class ImageOnly(SingleModality):
    @property
    def modalities(self):
        return (Modality("image", "image", (3, 8, 8)),)


@pytest.mark.parametrize("requirements, task, reason, described", [
    (Requirements(min_modalities=2), SingleModality(), "needs 2 modalities", "2+ modalities"),
    (Requirements(needs_labels=True), ProbeLabelsOnly(), "needs labels to train on", "labels"),
    (Requirements(needs_augmentations=True), SingleModality(), "needs augmentations", "augmentations"),
    (Requirements(modality_kinds=frozenset({"image"})), SingleModality(), "needs image inputs, not tabular",
     "image inputs"),
    (Requirements(needs_guide=True), SingleModality(), "needs an image modality for its guide to embed", "a guide"),
])
def test_each_requirement_is_checked_and_described(requirements, task, reason, described):
    assert reason in requirements.unmet(task)
    assert described in requirements.describe()


def test_a_task_that_offers_everything_meets_every_requirement():
    everything = Requirements(min_modalities=2, needs_labels=True, needs_augmentations=True,
                              modality_kinds=frozenset({"image", "tokens"}), needs_guide=True)
    assert everything.unmet(TinyShapesCaptions()) is None
    assert Requirements(needs_labels=True).unmet(SingleModality()) is None
    assert Requirements(needs_guide=True).unmet(ImageOnly()) is None  # a supplied guide needs no paired modality


def test_a_misspelt_modality_kind_is_refused():
    with pytest.raises(ValueError, match="unknown modality kind.s. images; choose from tabular"):
        Requirements(modality_kinds=frozenset({"images"}))


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_runs_on_some_registered_task(name):
    requirements = METHODS.get(name).requirements
    assert any(requirements.unmet(TASKS.get(task)()) is None for task in TASKS.names())
