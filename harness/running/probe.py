"""Linear-probe evaluation of a frozen representation.

Features are standardized with training statistics; an L2-regularized logistic
regression (multinomial for more than two classes, one logit for two: the
objective scikit-learn's LogisticRegression minimizes, C * sum of losses + |W|^2 / 2,
intercepts unpenalized) is fitted for each strength C, and the one with the best
validation accuracy is kept. The test split is scored once, with that model.

The solver is full-batch L-BFGS in torch, on whatever device the features are
trained on, in a whitened basis. Trained features are strongly correlated (their
covariance has a condition number in the thousands), which is what made a plain
solver take hundreds of iterations per C. With the standardized features' covariance
V diag(lam) V^T, the weights are written W = V diag(lam)^-1/2 U: the logits are the
same linear map, so the optimum is exactly the same, but in U the data term's
curvature is about the identity and the penalty |W|^2 = sum_j |U_j|^2 / lam_j is
diagonal. Each coordinate is then scaled by its curvature, and L-BFGS converges in
tens of iterations. The whitened features are never materialized: X is read
in row blocks against a d x k weight matrix, so memory is X plus a block of logits
(ImageNet-size features, 100k x 2048 with 1000 classes, fit on one GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
QUICK_ROWS = 2000
QUICK_C = 0.1  # strong regularization: a stable signal from few rows
MAX_ITERATIONS = 2000  # per C; real features need tens, nearly separable multi-class ones hundreds
GRADIENT_TOLERANCE = 1e-5  # on the curvature-scaled gradient: objective within about 1e-7 of its optimum
BLOCK_ELEMENTS = 1 << 22  # rows of X (and of the logits) handled at once: 16 MB of float32
LOWEST_EIGENVALUE = 1e-6  # relative to the largest: flatter directions are floored (still exact, see _Basis)


@dataclass(frozen=True)
class ProbeScores:
    val_acc: float
    val_f1: float
    test_acc: float | None
    test_f1: float | None
    C: float
    extra: dict[str, float] = field(default_factory=dict)  # further test scores (harness.running.grouped)

    def as_metrics(self) -> dict[str, float]:
        metrics = {"val_acc": self.val_acc, "val_f1": self.val_f1, "probe_C": self.C}
        if self.test_acc is not None:
            metrics |= {"test_acc": self.test_acc, "test_f1": self.test_f1}
        return metrics | self.extra


Features = tuple[np.ndarray, np.ndarray]


def accuracy_and_macro_f1(y: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """Accuracy and macro-F1 over every label that is true or predicted (scikit-learn's convention:
    a label never predicted and never true is not averaged; one with no true positives scores 0)."""
    labels = np.union1d(y, predicted)
    true_positive = np.array([np.sum((y == c) & (predicted == c)) for c in labels], dtype=float)
    support = np.array([np.sum(y == c) for c in labels], dtype=float)
    predicted_count = np.array([np.sum(predicted == c) for c in labels], dtype=float)
    denominator = support + predicted_count
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return float(np.mean(y == predicted)), float(f1.mean())


class _Basis:
    """Standardization with training statistics, and the whitening map T = V diag(lam)^-1/2.

    Flooring the smallest eigenvalues keeps T invertible, so W = T U is still an exact
    change of variables (the penalty becomes sum_j |U_j|^2 / floored lam_j); only the
    conditioning of the floored directions, which carry almost no data, is left imperfect.
    """

    def __init__(self, x: torch.Tensor):
        self.mean = x.mean(0)
        centered = x - self.mean
        std = centered.square().mean(0).sqrt()
        self.scale = torch.where(std > 0, std, torch.ones_like(std))  # constant features stay 0, not NaN
        self.train = torch.nan_to_num_(centered.div_(self.scale))
        eigenvalues, vectors = _principal_axes(self.train)
        self.floored = eigenvalues.clamp_min(LOWEST_EIGENVALUE * eigenvalues.max().clamp_min(1e-12))
        # Curvature of the data term along each whitened direction, relative to the floored ones.
        self.data_share = (eigenvalues.clamp_min(0) / self.floored).clamp_max(1.0)
        self.whiten = (vectors / self.floored.sqrt()).float()

    @property
    def rank(self) -> int:
        """The number of whitened directions: the feature count, or fewer when rows are fewer."""
        return self.whiten.shape[1]

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num_((x - self.mean).div_(self.scale))


def _principal_axes(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors of z's covariance, in float64.

    With more features than rows (raw pixels of a small split), the covariance has rank at most
    n: its nonzero part comes from the n x n Gram matrix at O(n^3) instead of O(d^3), and the
    optimum's weights lie in the rows' span (the penalty zeroes the rest, the data never sees it),
    so the null directions are left out without changing the solution.
    """
    n, d = z.shape
    if d <= n:
        covariance = torch.zeros(d, d, dtype=torch.float64, device=z.device)
        for block in _blocks(z, d):
            covariance += (block.T @ block).double()
        return torch.linalg.eigh(covariance / n)
    rows = z.double()
    eigenvalues, u = torch.linalg.eigh(rows @ rows.T / n)
    kept = eigenvalues > LOWEST_EIGENVALUE * eigenvalues.max().clamp_min(1e-12)
    eigenvalues, u = eigenvalues[kept], u[:, kept]
    return eigenvalues, (rows.T @ u) / (n * eigenvalues).sqrt()


class _Problem:
    """Mean cross-entropy + |W|^2 / (2 C n) over row blocks, as a function of the scaled whitened weights.

    With k softmax outputs, adding the same vector to every class's weights changes no
    probability, so along that direction only the penalty curves the objective. The class
    axis is rotated (orthonormal Q, first column the all-equal direction) so that direction
    is a coordinate of its own and gets its own scale.
    """

    def __init__(self, basis: _Basis, x: torch.Tensor, y: torch.Tensor, classes: int):
        self.basis, self.x, self.y = basis, x, y
        self.outputs = 1 if classes == 2 else classes  # two classes: one logit, as scikit-learn fits them
        self.n = len(y)
        spread = torch.eye(self.outputs, dtype=torch.float64, device=x.device)
        spread[:, 0] = 1.0
        self.rotation = torch.linalg.qr(spread)[0].float()

    def set_strength(self, C: float, start: torch.Tensor) -> None:
        """Scale each coordinate by the objective's curvature along it at `start` (unscaled parameters).

        In the rotated class basis, coordinate (j, c) has data curvature
        mean_i z_ij^2 (sum_k Q_kc^2 p_ik - (sum_k Q_kc p_ik)^2); with whitened z, E z_ij^2 = 1 and
        the mean over rows of the bracket stands in for it (exact for one logit, p(1-p))."""
        self.C = C
        d = self.basis.rank
        w = self.basis.whiten @ start[: d * self.outputs].view(d, self.outputs)
        intercept = start[d * self.outputs:]
        per_output = torch.zeros(self.outputs, dtype=torch.float64, device=self.x.device)
        for block in _blocks(self.x, max(self.x.shape[1], self.outputs)):
            logits = torch.addmm(intercept, block, w)
            if self.outputs == 1:
                p = torch.sigmoid(logits)
                per_output += (p * (1 - p)).sum(0, dtype=torch.float64)
            else:
                p = logits.softmax(1)
                per_output += (p @ self.rotation ** 2 - (p @ self.rotation) ** 2).sum(0, dtype=torch.float64)
        data = self.basis.data_share[:, None] * (per_output / self.n)[None, :]
        penalty = 1.0 / (C * self.n * self.basis.floored)[:, None]
        self.step_scale = (1.0 / (data + penalty).sqrt()).float()

    def weights(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, intercept) from the flat parameter vector (scaled rotated coordinates, then intercepts)."""
        d = self.basis.rank
        scaled = params[: d * self.outputs].view(d, self.outputs)
        return (scaled * self.step_scale) @ self.rotation.T, params[d * self.outputs:]

    def loss_and_grad(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        whitened, intercept = self.weights(params)
        w = self.basis.whiten @ whitened
        grad_w = torch.zeros_like(w)
        grad_b = torch.zeros_like(intercept)
        total = torch.zeros((), dtype=torch.float64, device=params.device)
        start = 0
        for block in _blocks(self.x, max(self.x.shape[1], self.outputs)):
            y = self.y[start:start + len(block)]
            start += len(block)
            logits = torch.addmm(intercept, block, w)
            if self.outputs == 1:
                z, target = logits[:, 0], y.float()
                total += (torch.nn.functional.softplus(z) - target * z).sum(dtype=torch.float64)
                residual = (torch.sigmoid(z) - target)[:, None]
            else:
                log_p = logits.log_softmax(1)
                total -= log_p.gather(1, y[:, None]).sum(dtype=torch.float64)
                residual = log_p.exp_()
                residual[torch.arange(len(y), device=y.device), y] -= 1
            grad_w.addmm_(block.T, residual)
            grad_b += residual.sum(0)
        inverse_eigenvalues = 1.0 / self.basis.floored[:, None]
        penalty = (whitened.double() ** 2 * inverse_eigenvalues).sum()
        loss = total / self.n + penalty / (2 * self.C * self.n)
        grad_penalty = whitened * (inverse_eigenvalues / (self.C * self.n)).float()
        grad_whitened = self.basis.whiten.T @ grad_w / self.n + grad_penalty
        grad = torch.cat([((grad_whitened @ self.rotation) * self.step_scale).flatten(), grad_b / self.n])
        return loss.float(), grad

    def fit(self, start: torch.Tensor) -> torch.Tensor:
        params = start.clone().requires_grad_(False)
        optimizer = torch.optim.LBFGS([params], lr=1.0, max_iter=MAX_ITERATIONS, history_size=20,
                                      tolerance_grad=GRADIENT_TOLERANCE, tolerance_change=1e-12,
                                      line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            loss, params.grad = self.loss_and_grad(params)
            return loss

        optimizer.step(closure)
        return params

    def to_unscaled(self, params: torch.Tensor) -> torch.Tensor:
        """Parameters re-expressed without this C's scaling, to warm-start the next C."""
        whitened, intercept = self.weights(params)
        return torch.cat([whitened.flatten(), intercept])

    def from_unscaled(self, raw: torch.Tensor) -> torch.Tensor:
        d = self.basis.rank
        whitened = raw[: d * self.outputs].view(d, self.outputs) @ self.rotation / self.step_scale
        return torch.cat([whitened.flatten(), raw[d * self.outputs:]])

    def predict(self, raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Predicted class codes from unscaled parameters (those of any C)."""
        d = self.basis.rank
        w = self.basis.whiten @ raw[: d * self.outputs].view(d, self.outputs)
        intercept = raw[d * self.outputs:]
        out = []
        for block in _blocks(x, max(x.shape[1], self.outputs)):
            logits = torch.addmm(intercept, block, w)
            out.append((logits[:, 0] > 0).long() if self.outputs == 1 else logits.argmax(1))
        return torch.cat(out)


def _blocks(x: torch.Tensor, width: int):
    rows = max(1, BLOCK_ELEMENTS // max(1, width))
    for start in range(0, len(x), rows):
        yield x[start:start + rows]


def _device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


class _Probe:
    """Fits on one training split; scores any other split with the model chosen for a C."""

    def __init__(self, train: Features, device: torch.device):
        self.device = device
        self.classes, codes = np.unique(np.asarray(train[1]), return_inverse=True)
        x = torch.as_tensor(np.asarray(train[0]), dtype=torch.float32, device=device)
        self.basis = _Basis(x) if len(self.classes) > 1 else None
        if self.basis is not None:
            self.problem = _Problem(self.basis, self.basis.train, torch.as_tensor(codes, device=device),
                                    len(self.classes))
            self.raw = torch.zeros((self.basis.rank + 1) * self.problem.outputs, device=device)

    def fit(self, C: float) -> torch.Tensor | None:
        """Fit at strength C, starting from the last fit (a good start; strong to weak saves half the work).

        Returns the model as unscaled parameters, which stay valid after the next C's fit."""
        if self.basis is None:
            return None
        self.problem.set_strength(C, self.raw)
        params = self.problem.fit(self.problem.from_unscaled(self.raw))
        self.raw = self.problem.to_unscaled(params)
        return self.raw

    def scores(self, model: torch.Tensor | None, split: Features) -> tuple[float, float]:
        y = np.asarray(split[1])
        if model is None:  # a training split with one class: predict it
            predicted = np.full(len(y), self.classes[0])
        else:
            x = self.basis.standardize(torch.as_tensor(np.asarray(split[0]), dtype=torch.float32, device=self.device))
            predicted = self.classes[self.problem.predict(model, x).cpu().numpy()]
        return accuracy_and_macro_f1(y, predicted)


@torch.no_grad()
def linear_probe(train: Features, val: Features, test: Features | None = None, grid=C_GRID,
                 device: torch.device | str | None = None) -> ProbeScores:
    """Choose C on validation accuracy; score the test split once with the chosen model."""
    probe = _Probe(train, _device(device))
    best = None
    for C in sorted(grid):
        model = probe.fit(C)
        acc, f1 = probe.scores(model, val)
        if best is None or acc > best[0]:
            best = (acc, f1, C, model)
    val_acc, val_f1, C, model = best
    test_acc = test_f1 = None
    if test is not None:
        test_acc, test_f1 = probe.scores(model, test)
    return ProbeScores(val_acc, val_f1, test_acc, test_f1, C)


@torch.no_grad()
def quick_probe_accuracy(train: Features, val: Features, seed: int = 0,
                         device: torch.device | str | None = None) -> float:
    """A cheap per-epoch validation signal for pruning: one C, a subsample of rows."""
    rows = np.random.default_rng(seed).permutation(len(train[1]))[:QUICK_ROWS]
    probe = _Probe((np.asarray(train[0])[rows], np.asarray(train[1])[rows]), _device(device))
    return probe.scores(probe.fit(QUICK_C), (val[0][:QUICK_ROWS], val[1][:QUICK_ROWS]))[0]
