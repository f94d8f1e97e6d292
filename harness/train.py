"""The one training loop every method runs through."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.errors import DivergedError
from harness.method import Auxiliary, Method
from harness.task import Batch, Split, TaskData

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


@dataclass
class TrainStats:
    epochs_run: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    wall_time_s: float = 0.0


def _optimizers(method: Method, cfg: TrainConfig) -> tuple[torch.optim.Optimizer | None, list]:
    auxiliaries = method.auxiliaries()
    aux_ids = {id(p) for aux in auxiliaries for p in aux.parameters}
    main_params = [p for p in method.parameters() if p.requires_grad and id(p) not in aux_ids]
    main = torch.optim.AdamW(main_params, lr=cfg.lr, weight_decay=cfg.weight_decay) if main_params else None
    aux = [
        (a, torch.optim.AdamW(a.parameters, lr=cfg.lr * a.lr_scale, weight_decay=cfg.weight_decay))
        for a in auxiliaries
    ]
    return main, aux


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, max_norm: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()


def _finite(value: torch.Tensor, what: str, epoch: int, step: int) -> float:
    scalar = float(value.detach())
    if not math.isfinite(scalar):
        raise DivergedError(f"{what} became {scalar} at epoch {epoch + 1}, step {step + 1}")
    return scalar


def fit(
    method: Method,
    data: TaskData,
    cfg: TrainConfig,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
) -> TrainStats:
    """Train `method` on the training split; `on_epoch` may raise to stop early (pruning)."""
    stats = TrainStats()
    started = time.perf_counter()
    method.to(cfg.device)
    method.prepare(data.train)
    main, aux = _optimizers(method, cfg)
    main_params = [p for group in main.param_groups for p in group["params"]] if main else []
    augment = method.task.augment if method.task.offers_augmentations() else None
    modalities = method.input_modalities(method.task)
    bar = tqdm(range(cfg.epochs), desc=f"{method.name}", unit="epoch", disable=not cfg.progress, leave=False)
    for epoch in bar:
        method.train()
        sums: dict[str, list[float]] = {}
        for step, (inputs, labels, rows) in enumerate(data.train.batches(cfg.batch_size, shuffle=True, generator=generator)):
            batch = Batch(_to(inputs, cfg.device, modalities.train), labels.to(cfg.device), rows, augment)
            out = method.loss(batch)
            terms = out if isinstance(out, dict) else {"loss": out}
            loss = terms["loss"]
            _finite(loss, "loss", epoch, step)
            if main is not None:
                _step(main, loss, main_params, cfg.max_grad_norm)
            for objective, optimizer in aux:
                terms.update(_auxiliary_steps(objective, optimizer, batch, cfg.max_grad_norm, epoch, step))
            for key, value in terms.items():
                sums.setdefault(f"train_{key}", []).append(float(value.detach()))
        metrics = {key: float(np.mean(values)) for key, values in sums.items()}
        stats.history.append(metrics)
        stats.epochs_run = epoch + 1
        bar.set_postfix(loss=f"{metrics.get('train_loss', float('nan')):.4f}")
        if on_epoch is not None:
            on_epoch(method, epoch, metrics)
    stats.wall_time_s = time.perf_counter() - started
    return stats


def _auxiliary_steps(objective: Auxiliary, optimizer: torch.optim.Optimizer, batch: Batch, max_norm: float,
                     epoch: int, step: int) -> dict[str, torch.Tensor]:
    """Step one auxiliary objective `objective.steps` times; its logged scalars, averaged over the steps."""
    logged: dict[str, list[torch.Tensor]] = {}
    for _ in range(objective.steps):
        out = objective.loss(batch)
        terms = out if isinstance(out, dict) else {"loss": out}
        _finite(terms["loss"], f"{objective.name} loss", epoch, step)
        _step(optimizer, terms["loss"], objective.parameters, max_norm)
        for key, value in terms.items():
            logged.setdefault(f"{objective.name}_{key}", []).append(value.detach())
    return {key: torch.stack(values).mean() for key, values in logged.items()}


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
