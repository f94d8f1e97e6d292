"""The one training loop every method runs through."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.api.errors import DivergedError
from harness.api.method import Auxiliary, Method
from harness.api.task import Batch, Split, TaskData
from harness.running import distributed, preemption
from harness.running.checkpoint import SeedCheckpoint, restore_rng, rng_state

log = logging.getLogger(__name__)

EpochCallback = Callable[[Method, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    device: torch.device
    max_grad_norm: float = 10.0
    progress: bool = True
    bf16: bool = False  # bfloat16 autocast for the forward passes (losses, critics); weights stay float32
    compile: bool = False  # torch.compile each convolutional encoder (CUDA); pays only over many steps
    # Stop after the step at which SIGTERM or SIGUSR1 came (harness.running.preemption): a trial's or a seed's
    # fit, not one a method runs inside its own `prepare`. Every rank of a data-parallel fit must agree on it.
    preemptible: bool = False


@dataclass
class TrainStats:
    epochs_run: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0


def _adamw(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel updates every tensor in one call: about 5x less optimizer time per step on a CPU
    # than one small op per tensor, and the same update.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _optimizers(method: Method, cfg: TrainConfig) -> tuple[torch.optim.Optimizer | None, list]:
    auxiliaries = method.auxiliaries()
    aux_ids = {id(p) for aux in auxiliaries for p in aux.parameters}
    main_params = [p for p in method.parameters() if p.requires_grad and id(p) not in aux_ids]
    main = _adamw(main_params, cfg.lr, cfg.weight_decay, cfg.device) if main_params else None
    aux = [(a, _adamw(a.parameters, cfg.lr * a.lr_scale, cfg.weight_decay, cfg.device)) for a in auxiliaries]
    return main, aux


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, max_norm: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()


class _EpochSums:
    """Logged terms summed on the device, and the first step whose loss was not finite.

    Nothing here reads a value back to the host during the epoch: on a GPU each such read
    is a synchronization that stalls the queue of kernels. `close` reads everything once.
    """

    def __init__(self, device: torch.device):
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.first_bad: dict[str, torch.Tensor] = {}
        self.device = device

    def watch(self, what: str, value: torch.Tensor, step: int) -> None:
        """Remember the first step at which `value` was NaN or infinite (-1: none so far)."""
        bad = self.first_bad.setdefault(what, torch.full((), -1, dtype=torch.long, device=self.device))
        bad.copy_(torch.where((bad < 0) & ~torch.isfinite(value.detach()), step, bad))

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        for key, value in terms.items():
            value = torch.as_tensor(value, device=self.device).detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value.clone()
        self.steps += 1

    def state(self) -> dict:
        cpu = lambda tensors: {key: value.cpu() for key, value in tensors.items()}  # noqa: E731
        return {"sums": cpu(self.sums), "steps": self.steps, "first_bad": cpu(self.first_bad)}

    @classmethod
    def restored(cls, device: torch.device, state: dict) -> "_EpochSums":
        sums = cls(device)
        sums.sums = {key: value.to(device) for key, value in state["sums"].items()}
        sums.steps = state["steps"]
        sums.first_bad = {key: value.to(device) for key, value in state["first_bad"].items()}
        return sums

    def close(self, epoch: int) -> dict[str, float]:
        """The epoch's means; DivergedError naming the first non-finite loss and its step."""
        for what, bad in self.first_bad.items():
            step = int(bad)
            if step >= 0:
                raise DivergedError(f"{what} became non-finite at epoch {epoch + 1}, step {step + 1} "
                                    f"(checked at the end of the epoch)")
        return {f"train_{key}": float(total) / self.steps for key, total in self.sums.items()}


def fit(
    method: Method,
    data: TaskData,
    cfg: TrainConfig,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
    checkpoint: SeedCheckpoint | None = None,
) -> TrainStats:
    """Train `method` on the training split; `on_epoch` may raise to stop early (pruning).

    Data-parallel across the ranks when torchrun started the command (harness.running.distributed);
    `cfg.batch_size` is then the global batch. With `checkpoint`, a preempted fit keeps its whole state there
    before it raises Preempted, and a fit whose checkpoint holds a state goes on from it."""
    with distributed.replicas() as parallel:
        return _fit(method, data, cfg, generator, on_epoch, parallel, checkpoint)


def _fit(method: Method, data: TaskData, cfg: TrainConfig, generator: torch.Generator,
         on_epoch: EpochCallback | None, parallel: distributed.Alone | distributed.DataParallel,
         checkpoint: SeedCheckpoint | None = None) -> TrainStats:
    stats = TrainStats()
    started = time.perf_counter()
    method.to(cfg.device)
    if cfg.device.type == "cuda":
        # Convolutions on CUDA run fastest on NHWC (tensor cores read it directly); only 4-D weights change.
        method.to(memory_format=torch.channels_last)
        if cfg.compile:
            _compile_convolutional(method)
    method.prepare(data.train)
    resume = checkpoint.state if checkpoint is not None else None
    if cfg.preemptible:
        resume = parallel.share(resume)  # rank 0 holds the file; every rank resumes from it
    if resume is not None:
        method.load_state_dict(resume["method"])
        with torch.no_grad():  # an objective's parameters need not be the method's own modules
            for objective, kept in zip(method.auxiliaries(), resume["auxiliaries"], strict=True):
                for parameter, value in zip(objective.parameters, kept, strict=True):
                    parameter.copy_(value)
    parallel.prepare(method)
    main, aux = _optimizers(method, cfg)
    if resume is not None:
        _load_optimizers(main, aux, resume["optimizers"])
        stats.history = list(resume["history"])
        stats.epochs_run = len(stats.history)
    steps_done = resume["steps_done"] if resume is not None else 0
    main_params = [p for group in main.param_groups for p in group["params"]] if main else []
    offered = method.task.offers_augmentations()
    augment = method.task.augment if offered else None
    augment_pair = method.task.augment_pair if offered else None
    autocast = torch.autocast(cfg.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    modalities = method.input_modalities(method.task)
    first = resume["epoch"] if resume is not None else 0
    bar = tqdm(range(first, cfg.epochs), desc=f"{method.name}", unit="epoch", disable=not cfg.progress, leave=False)
    for epoch in bar:
        method.train()
        sums, skip = _EpochSums(cfg.device), 0
        if resume is not None:  # the preempted epoch: its order drawn again, its steps done skipped
            generator.set_state(resume["order"])
            own = resume["ranks"][parallel.rank]
            sums, skip = _EpochSums.restored(cfg.device, own["sums"]), resume["step"]
        order = generator.get_state()
        batches = iter(parallel.batches(data.train, cfg.batch_size, generator))
        for _ in itertools.islice(batches, skip):
            pass
        if resume is not None:  # after the skipped batches, which may have drawn from them
            restore_rng(own["rng"])
            resume = None
        for step, (inputs, labels, rows) in enumerate(_ahead(batches, cfg.device, modalities.train), start=skip):
            batch = Batch(inputs, labels, rows, augment, augment_pair)
            with autocast:
                out = parallel.loss(batch)
            terms = out if isinstance(out, dict) else {"loss": out}
            loss = terms["loss"]
            sums.watch("loss", loss, step)
            if main is not None:
                _step(main, loss, main_params, cfg.max_grad_norm)
            for objective, optimizer in aux:
                terms.update(_auxiliary_steps(parallel.auxiliary(objective), optimizer, batch, cfg.max_grad_norm,
                                              sums, step, autocast))
            sums.add(terms)
            steps_done += 1
            if cfg.preemptible:
                if checkpoint is not None and checkpoint.due(steps_done):
                    preemption.request()
                if parallel.stop_agreed(preemption.requested()):
                    position = {"epoch": epoch, "step": step + 1, "steps_done": steps_done, "order": order}
                    _preempted(method, main, aux, stats, sums, position, parallel, checkpoint)
        parallel.agree(sums.first_bad)
        metrics = sums.close(epoch)
        stats.history.append(metrics)
        stats.epochs_run = epoch + 1
        bar.set_postfix(loss=f"{metrics.get('train_loss', float('nan')):.4f}")
        parallel.after_epoch(on_epoch, method, epoch, metrics)
    stats.wall_time_s = time.perf_counter() - started
    return stats


def _preempted(method: Method, main, aux: list, stats: TrainStats, sums: _EpochSums, position: dict,
               parallel: distributed.Alone | distributed.DataParallel, checkpoint: SeedCheckpoint | None) -> None:
    """Every rank stops here together; rank 0 keeps the state (a trial keeps none: it is run again whole)."""
    # Each rank's augmentations draw from their own stream, and each sums its own part of the loss.
    ranks = parallel.gather({"rng": rng_state(), "sums": sums.state()})
    if checkpoint is not None:
        checkpoint.write({
            **position, "method": method.state_dict(), "ranks": ranks,
            "auxiliaries": [[p.detach() for p in objective.parameters] for objective, _optimizer in aux],
            "optimizers": {"main": main.state_dict() if main is not None else None,
                           "auxiliaries": [optimizer.state_dict() for _objective, optimizer in aux]},
            "history": stats.history})
        raise preemption.Preempted(f"the seed's training state is kept in {checkpoint.path}")
    raise preemption.Preempted("the trial in training is given back, and runs again from its start")


def _load_optimizers(main, aux: list, states: dict) -> None:
    if main is not None:
        main.load_state_dict(states["main"])
    for (_objective, optimizer), state in zip(aux, states["auxiliaries"], strict=True):
        optimizer.load_state_dict(state)


def _auxiliary_steps(objective: Auxiliary, optimizer: torch.optim.Optimizer, batch: Batch, max_norm: float,
                     sums: _EpochSums, step: int, autocast) -> dict[str, torch.Tensor]:
    """Step one auxiliary objective `objective.steps` times; its logged scalars, averaged over the steps."""
    logged: dict[str, list[torch.Tensor]] = {}
    for _ in range(objective.steps):
        with autocast:
            out = objective.loss(batch)
        terms = out if isinstance(out, dict) else {"loss": out}
        sums.watch(f"{objective.name} loss", terms["loss"], step)
        _step(optimizer, terms["loss"], objective.parameters, max_norm)
        for key, value in terms.items():
            logged.setdefault(f"{objective.name}_{key}", []).append(value.detach())
    return {key: torch.stack(values).mean() for key, values in logged.items()}


def _ahead(batches, device: torch.device, names: tuple[str, ...]):
    """The batches on the device. On CUDA each batch's copy is issued on a side stream one batch ahead,
    so it overlaps the step before (from pinned memory the copy is asynchronous); the training stream
    waits for it on the GPU, never the host. Elsewhere, plain copies as they come."""
    if device.type != "cuda":
        for inputs, labels, rows in batches:
            yield _to(inputs, device, names), labels.to(device), rows
        return
    side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def copy(batch):
        inputs, labels, rows = batch
        with torch.cuda.stream(side):
            return _to(inputs, device, names), labels.to(device, non_blocking=True), rows

    yield from _one_ahead(batches, copy, lambda batch: _handed_over(batch, main, side))


def _one_ahead(batches, copy: Callable, hand_over: Callable):
    """Each batch `hand_over`ed after the next one's `copy` began: the producer runs one batch ahead of the
    step. Apart from _ahead's CUDA streams, so tests run this order on the CPU (tests/test_batch_ahead.py)."""
    pending = None
    for batch in batches:
        copied = copy(batch)
        if pending is not None:
            yield hand_over(pending)
        pending = copied
    if pending is not None:
        yield hand_over(pending)


def _handed_over(batch, main: "torch.cuda.Stream", side: "torch.cuda.Stream"):
    """A batch copied on `side`, made safe to use (and to free) on `main`."""
    main.wait_stream(side)
    inputs, labels, rows = batch
    for tensor in (*inputs.values(), labels):
        tensor.record_stream(main)
    return inputs, labels, rows


def _compile_convolutional(method: Method) -> None:
    """torch.compile each convolutional encoder (a member of a ModuleDict of encoders with 4-D weights)."""
    for module in list(method.modules()):
        if isinstance(module, torch.nn.ModuleDict):
            for encoder in module.values():
                if any(p.dim() == 4 for p in encoder.parameters()):
                    encoder.compile()


def _to(inputs: dict[str, torch.Tensor], device: torch.device, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The named modalities of a batch, on the device: what the method declared it reads, nothing more."""
    return {name: inputs[name].to(device, non_blocking=True) for name in names}


@torch.no_grad()
def extract_features(method: Method, split: Split, device: torch.device, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Frozen representation of a whole split, in row order."""
    method.to(device)
    method.eval()
    probed = method.input_modalities(method.task).probe
    features = []
    for inputs, _labels, _rows in split.batches(batch_size):
        features.append(method.encode(_to(inputs, device, probed)).float().cpu())
    return torch.cat(features).numpy(), split.labels.numpy()

