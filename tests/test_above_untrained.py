"""Probe outputs against chance on a task built so that the guarantee is derivable (issue 42, item 2): an untrained
encoder scores within a closed-form bound near chance, and SimCLR, trained a few seconds, is far above it.

The task (tests/hidden_signal.py) hides the label's latent z ~ N(0, 1) among D = NUISANCE_DIM nuisance
coordinates n ~ N(0, s^2 I), rotated by a fixed orthogonal Q; its encoder is linear. Its views share z and redraw
n, so InfoNCE between two views can only be lowered by encoding z: its population optimum reads z and drops n.
"""

import math

import pytest
import torch

from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything
from harness.running.probe import linear_probe
from harness.running.train import TrainConfig, extract_features, fit
from tests.hidden_signal import NUISANCE_SD

EMBED_DIM = 16  # k, small beside D = 400: the untrained read-out's signal-to-noise ratio is about k / (s^2 D)
TRAINING = {"epochs": 10, "batch_size": 256, "lr": 1e-2}  # about a second on one thread
SD = 3  # one-sided tail of 3 normal sd: a correct method fails by chance with probability < 0.14%


@pytest.fixture(scope="module")
def task_and_data():
    task = TASKS.get("hidden-signal")()
    return task, task.load()


def probed(method_name: str, task, data):
    """The method built from seed 0 (trained first if it trains) and its probe's test accuracy. Both methods build
    their encoder first, so from the same seed SimCLR starts from exactly the untrained method's encoder."""
    seed_everything(0)
    cls = METHODS.get(method_name)
    method = cls(task, cls.defaults | {"embed_dim": EMBED_DIM})
    if cls.trains:
        config = TrainConfig(**TRAINING, weight_decay=0.0, device=torch.device("cpu"), progress=False)
        fit(method, data, config, torch.Generator().manual_seed(0))
    features = [extract_features(method, getattr(data, s), torch.device("cpu")) for s in ("train", "val", "test")]
    return method, linear_probe(*features).test_acc


def bayes_accuracy_of_a_linear_encoder(linear: torch.nn.Linear, rotation: torch.Tensor) -> float:
    """The best accuracy any classifier of the encoder's output f = W x + b can reach on the label 1[z > 0].

    In the task's own coordinates c = [z, n] = x Q, f = M c + b with M = W Q; m = M[:, 0] carries z and
    N = M[:, 1:] the nuisance. Given the weights, (z, f) are jointly Gaussian, so E[z | f] is linear in f and
    P(z > 0 | f) = Phi(E[z | f] / sd) rises with it: the Bayes classifier is the sign of E[z | f], and no probe on f,
    linear or not, beats it in the population. Its squared correlation with z is R^2 = m^T Cov(f)^-1 m = S / (1 + S)
    (Sherman-Morrison on Cov(f) = m m^T + s^2 N N^T), with S = m^T (s^2 N N^T)^-1 m the best read-out's
    signal-to-noise ratio; two Gaussians of correlation R agree in sign with probability 1/2 + arcsin(R) / pi
    (Sheppard). With W's i.i.d. entries of variance v (torch's default init), |m|^2 ~ k v and N N^T ~ D v I, so
    S ~ k / (s^2 D) = 0.04 and the bound is about 0.56; it is computed here from the weights themselves.
    """
    M = linear.weight.detach().double() @ rotation.double()
    m, N = M[:, 0], M[:, 1:]
    S = m @ torch.linalg.solve(NUISANCE_SD**2 * N @ N.T, m)
    return 0.5 + math.asin(math.sqrt(S / (1 + S))) / math.pi


def test_an_untrained_encoder_scores_within_its_bayes_bound(task_and_data):
    task, data = task_and_data
    method, accuracy = probed("untrained", task, data)
    linears = [layer for layer in method.encoders["x"].modules() if isinstance(layer, torch.nn.Linear)]
    assert len(linears) == 1, "the bound below holds for a single linear map"
    bound = bayes_accuracy_of_a_linear_encoder(linears[0], task.rotation)
    # The probe is fitted on train and val rows only, so its hits on the n test rows are n independent draws whose
    # rate is at most `bound`: their mean passes bound + 3 sd (sd <= sqrt(1 / 4n), 0.034 at n = 2000) with
    # probability < 0.14%. Chance is 1/2 (z is symmetric), so the bound is the untrained encoder's whole lead.
    n = len(data.test)
    assert accuracy <= bound + SD * math.sqrt(0.25 / n), (accuracy, bound, n)


def test_simclr_beats_its_untrained_encoder_by_more_than_the_test_rows_noise(task_and_data):
    task, data = task_and_data
    _, untrained = probed("untrained", task, data)
    _, trained = probed("simclr", task, data)
    # Both probes score the same n test rows: given the fitted probes, the difference of their accuracies is a mean
    # of n independent per-row differences d in {-1, 0, 1}, of variance at most E d^2 <= 1. Were SimCLR no better
    # than its starting encoder (E d <= 0), the mean would pass 3 / sqrt(n) (0.067 at n = 2000) with probability
    # < 0.14%.
    n = len(data.test)
    assert trained - untrained > SD * math.sqrt(1 / n), (trained, untrained, n)
