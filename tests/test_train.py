import pytest
import torch
from torch import nn

from harness.api.errors import DivergedError
from harness.api.method import Auxiliary, Method
from harness.running.environment import seed_everything
from harness.running.train import TrainConfig, fit
from tests.fixtures import TinySynthetic

CPU = TrainConfig(epochs=1, batch_size=64, lr=1e-2, weight_decay=0.0, device=torch.device("cpu"), progress=False)


class WithCritic(Method):
    """A main network and a critic that only its own auxiliary objective may move."""

    name = "with-critic"
    display_name = "With critic"

    def __init__(self, task, hparams):
        super().__init__(task, hparams)
        self.encoder = nn.Linear(20, 4)
        self.critic = nn.Linear(4, 1)
        self.critic_lr_scale = hparams.get("critic_lr_scale", 1.0)

    def loss(self, batch):
        # The critic takes part in the main loss, yet the main optimizer must not step it.
        return (self.critic(self.encoder(batch.inputs["x1"])) - 1).pow(2).mean()

    def auxiliaries(self):
        critic_loss = lambda batch: self.critic(self.encoder(batch.inputs["x1"]).detach()).pow(2).mean()  # noqa: E731
        return [Auxiliary("critic", self.critic.parameters(), critic_loss, lr_scale=self.critic_lr_scale)]

    def encode(self, inputs):
        return self.encoder(inputs["x1"])


def train(method: Method) -> dict:
    seed_everything(0)
    return fit(method, method.task.load(), CPU, torch.Generator().manual_seed(0)).history[0]


def test_the_main_optimizer_never_steps_auxiliary_parameters():
    frozen = WithCritic(TinySynthetic(), {"critic_lr_scale": 0.0})  # its own optimizer has lr 0
    critic, encoder = frozen.critic.weight.detach().clone(), frozen.encoder.weight.detach().clone()
    history = train(frozen)
    assert "train_critic_loss" in history
    assert torch.equal(critic, frozen.critic.weight)
    assert not torch.equal(encoder, frozen.encoder.weight)


def test_auxiliary_objectives_are_stepped():
    method = WithCritic(TinySynthetic(), {})
    critic = method.critic.weight.detach().clone()
    train(method)
    assert not torch.equal(critic, method.critic.weight)


def test_a_nan_loss_stops_training_with_a_clear_error():
    task = TinySynthetic()

    class Exploding(WithCritic):
        def loss(self, batch):
            return super().loss(batch) * float("nan")

    with pytest.raises(DivergedError, match="loss became non-finite at epoch 1, step 1 "):
        fit(Exploding(task, {}), task.load(), CPU, torch.Generator().manual_seed(0))


def test_a_loss_that_turns_nan_mid_epoch_is_named_with_its_step_at_the_epoch_end():
    task = TinySynthetic()
    steps = []

    class LateNaN(WithCritic):
        def loss(self, batch):
            steps.append(len(steps))
            return super().loss(batch) * (float("inf") if len(steps) == 3 else 1.0)

    with pytest.raises(DivergedError, match="loss became non-finite at epoch 1, step 3 "):
        fit(LateNaN(task, {}), task.load(), CPU, torch.Generator().manual_seed(0))
    assert len(steps) > 3, "the epoch runs to its end before the check"


def test_the_loop_reads_values_back_once_per_epoch_not_per_step(monkeypatch):
    task = TinySynthetic()
    reads = []
    for read in ("__float__", "__int__", "__bool__", "item", "tolist"):
        original = getattr(torch.Tensor, read)
        monkeypatch.setattr(torch.Tensor, read, lambda t, *a, _original=original: reads.append(1) or _original(t, *a))
    config = TrainConfig(**{**CPU.__dict__, "epochs": 2, "batch_size": 8})
    stats = fit(WithCritic(task, {}), task.load(), config, torch.Generator().manual_seed(0))
    steps = -(-len(task.load().train) // 8)
    logged = len(stats.history[0])  # train_loss and the critic's loss; both also checked for NaN
    assert steps > 4 * logged
    assert len(reads) <= 2 * 2 * logged  # per epoch: each mean and each NaN check read once; none per step


def test_logged_means_are_the_means_of_the_steps():
    task = TinySynthetic()
    seen = []

    class Recording(WithCritic):
        def loss(self, batch):
            loss = super().loss(batch)
            seen.append(loss.item())
            return loss

    stats = fit(Recording(task, {}), task.load(), CPU, torch.Generator().manual_seed(0))
    # 320 rows at batch 64: 5 losses summed on the device in float32, 4 roundings of eps32 / 2 of the running
    # sum each, ~2.4e-7 relative, against a float64 sum: rel 1e-6.
    assert stats.history[0]["train_loss"] == pytest.approx(sum(seen) / len(seen), rel=1e-6)


def test_on_epoch_sees_every_epoch_and_may_stop_training():
    task = TinySynthetic()
    seen = []

    def stop_after_two(method, epoch, metrics):
        seen.append((epoch, metrics["train_loss"]))
        if epoch == 1:
            raise StopIteration

    with pytest.raises(StopIteration):
        fit(WithCritic(task, {}), task.load(), TrainConfig(**{**CPU.__dict__, "epochs": 5}),
            torch.Generator().manual_seed(0), stop_after_two)
    assert [epoch for epoch, _ in seen] == [0, 1]


def test_an_auxiliary_takes_its_steps_and_logs_the_mean_of_what_it_returns():
    method = WithCritic(TinySynthetic(), {})
    values = iter(range(1000))

    def critic_loss(batch):
        step = float(next(values))
        loss = method.critic(method.encoder(batch.inputs["x1"]).detach()).pow(2).mean()
        return {"loss": loss, "step": torch.tensor(step)}

    method.auxiliaries = lambda: [Auxiliary("critic", method.critic.parameters(), critic_loss, steps=3)]
    history = train(method)
    batches = -(-len(method.task.load().train) // CPU.batch_size)
    assert next(values) == 3 * batches  # three calls per main step
    # Per batch the mean of its three steps; per epoch the mean of those: (0 + ... + 3 * batches - 1) / (3 * batches).
    # Small integers sum exactly in float32; only the last division rounds, inside approx's default rel 1e-6.
    assert history["train_critic_step"] == pytest.approx((3 * batches - 1) / 2)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        Auxiliary("critic", [], critic_loss, steps=0)
