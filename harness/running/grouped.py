"""Held-out-group scores: does a representation put a class's unseen members in their class?

A task may say that each row belongs to a member group inside its class
(`Task.group_extra` names the split extra holding an integer group id per row:
the shape a superclass is drawn as, the breed of an animal class). The
ordinary probe is fit and scored on every member, and a linear probe can win
it by telling the members apart, whatever links them (any labelling of
separable clusters is linear). These scores hold members out instead:

- The split of members, fixed: each class's group ids in increasing order;
  fold k holds out the k-th member of every class (with m_c members, the
  (k mod m_c)-th), for k = 0 .. max_c m_c - 1, so every member is held out once.
- `heldout_group_acc`: per fold, the linear probe of harness.running.probe
  (same standardization, the same grid of C) fit on the training rows of the
  members kept, its C chosen on the validation rows of those same members (the
  held-out members are never seen before they are scored), then scored on the
  test rows of the held-out members; the mean over folds.
- `heldout_group_knn`: per fold, the class most common among the k = 20 nearest
  training rows of the members kept, by cosine similarity, for each test row of
  a held-out member (ties to the lower class id); the mean over folds.

Every class needs at least two members, or no member of it could be held out
with another kept to train on.

Held out means unseen by the probe's labels, nothing more: the representation
was trained on every training row, held-out members' included (labels or not),
and whatever it was built from (a guide's pretraining pool, say) may hold them
too; a method states that in its record (`Method.record_notes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.api.errors import HarnessError
from harness.running import probe

KNN_K = 20
KNN_BLOCK = 1024  # test rows compared with the training rows at once


@dataclass(frozen=True)
class GroupedFeatures:
    """One split's frozen features, labels and member group ids, in row order."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


def heldout_folds(labels: np.ndarray, groups: np.ndarray) -> list[np.ndarray]:
    """The group ids each fold holds out (module docstring); refuses a class with fewer than two members."""
    members: dict[int, list[int]] = {}
    for label, group in sorted(set(zip(np.asarray(labels).tolist(), np.asarray(groups).tolist()))):
        members.setdefault(label, []).append(group)
    shared = sorted({g for g, n in _group_classes(labels, groups).items() if n > 1})
    if shared:
        raise HarnessError(f"member group(s) {shared[:5]} appear under more than one class; a group id must name "
                           f"a member of one class")
    few = sorted(c for c, m in members.items() if len(m) < 2)
    if few:
        raise HarnessError(f"class(es) {few[:5]} have a single member group; holding members out needs at least two "
                           f"per class")
    folds = max(len(m) for m in members.values())
    return [np.array(sorted(m[k % len(m)] for m in members.values())) for k in range(folds)]


def _group_classes(labels: np.ndarray, groups: np.ndarray) -> dict[int, int]:
    classes: dict[int, set[int]] = {}
    for label, group in zip(np.asarray(labels).tolist(), np.asarray(groups).tolist()):
        classes.setdefault(group, set()).add(label)
    return {g: len(c) for g, c in classes.items()}


def knn_accuracy(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], k: int = KNN_K,
                 device: torch.device | str | None = None) -> float:
    """Accuracy of a cosine k-nearest-neighbour majority vote (ties to the lower class id)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = torch.nn.functional.normalize(torch.as_tensor(np.asarray(train[0]), dtype=torch.float32, device=device), dim=1)
    classes, codes = np.unique(np.asarray(train[1]), return_inverse=True)
    codes_t = torch.as_tensor(codes, device=device)
    k = min(k, len(x))
    predicted = []
    queries = torch.as_tensor(np.asarray(test[0]), dtype=torch.float32, device=device)
    for start in range(0, len(queries), KNN_BLOCK):
        q = torch.nn.functional.normalize(queries[start:start + KNN_BLOCK], dim=1)
        nearest = (q @ x.T).topk(k, dim=1).indices
        votes = torch.zeros(len(q), len(classes), device=device).scatter_add_(
            1, codes_t[nearest], torch.ones(nearest.shape, device=device))
        predicted.append(votes.argmax(1).cpu())  # argmax returns the first maximum: the lower class id
    if not predicted:
        return float("nan")
    return float(np.mean(classes[torch.cat(predicted).numpy()] == np.asarray(test[1])))


@torch.no_grad()
def heldout_group_scores(train: GroupedFeatures, val: GroupedFeatures, test: GroupedFeatures,
                         device: torch.device | str | None = None) -> dict[str, float]:
    """`heldout_group_acc` and `heldout_group_knn` (module docstring), each the mean over the folds."""
    probe_scores, knn_scores = [], []
    for held in heldout_folds(np.concatenate([train.labels, test.labels]),
                              np.concatenate([train.groups, test.groups])):
        kept_train, kept_val = ~np.isin(train.groups, held), ~np.isin(val.groups, held)
        scored = np.isin(test.groups, held)
        if not scored.any():
            raise HarnessError(f"no test row belongs to held-out member group(s) {held.tolist()}")
        fit_on = (train.features[kept_train], train.labels[kept_train])
        chosen_on = (val.features[kept_val], val.labels[kept_val])
        scored_on = (test.features[scored], test.labels[scored])
        probe_scores.append(probe.linear_probe(fit_on, chosen_on, scored_on, device=device).test_acc)
        knn_scores.append(knn_accuracy(fit_on, scored_on, device=device))
    return {"heldout_group_acc": float(np.mean(probe_scores)), "heldout_group_knn": float(np.mean(knn_scores))}


def split_groups(split, extra: str, task_name: str) -> np.ndarray:
    """A split's member group ids, from the extra the task names; one line if the split lacks it."""
    extras = getattr(split, "extras", {}) or {}
    if extra not in extras:
        raise HarnessError(f"task {task_name} names group_extra '{extra}', but its split has no such extra "
                           f"(it has: {', '.join(sorted(extras)) or 'none'})")
    return np.asarray(extras[extra].cpu().numpy() if isinstance(extras[extra], torch.Tensor) else extras[extra])
