"""The probe on trained features (slow: tens of seconds); the fast checks are in tests/test_probe_optimum.py."""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from harness.api.catalog import METHODS, TASKS
from harness.running.environment import seed_everything
from harness.running.probe import C_GRID, GRADIENT_TOLERANCE, _Probe, accuracy_and_macro_f1, linear_probe
from harness.running.probe_reference import _fit as _reference_fit
from harness.running.probe_reference import _standardize, reference_linear_probe
from harness.running.train import TrainConfig, extract_features, fit


def trained_features(task_name: str, rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Features of a CLIP trained briefly: correlated like real representations, unlike random blobs."""
    task = TASKS.get(task_name)()
    data = task.load()
    seed_everything(0)
    cls = METHODS.get("clip")
    method = cls(task, {"lr": 2e-3, "weight_decay": 1e-5, **cls.defaults})
    config = TrainConfig(epochs=1, batch_size=128, lr=2e-3, weight_decay=1e-5, device=torch.device("cpu"),
                         progress=False)
    fit(method, type(data)(train=data.train.subset(rows), val=data.val, test=data.test), config,
        torch.Generator().manual_seed(0))
    splits = (data.train.subset(rows), data.val.subset(rows // 2), data.test.subset(rows // 2))
    return [extract_features(method, split, torch.device("cpu")) for split in splits]


def _fast_models(train, grid) -> tuple[_Probe, dict]:
    """The probe's model at each C of `grid`, reached as linear_probe reaches it (strong to weak, warm-started):
    as float64 (W, b) on the standardized features (one logit, W: d x 1, for two classes), as the probe holds
    it, and the objective gap its stopping rule promises."""
    probe, models = _Probe(train, torch.device("cpu")), {}
    d, k = probe.basis.rank, probe.problem.outputs
    for C in sorted(grid):
        raw = probe.fit(C)
        # What the stopping rule promises at this C (see the multiclass test below): an objective within
        # D t^2 / (2 mu) of the optimum, D = d k scaled coordinates, mu = min s^2 / (C n lam_j).
        step = probe.problem.step_scale.double()
        mu = float((step.square() / (C * len(train[1]) * probe.basis.floored.double()[:, None])).min())
        models[C] = ((probe.basis.whiten.double() @ raw[: d * k].view(d, k).double()).numpy(), raw[d * k:].double().numpy(),
                     raw.clone(), d * k * GRADIENT_TOLERANCE ** 2 / (2 * mu))
    return probe, models


def _decision(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logits with one column per class: two classes' single logit z becomes [0, z], scikit-learn's binomial form."""
    z = x @ w + b
    return np.c_[np.zeros(len(z)), z] if z.shape[1] == 1 else z


def _open_rows(xs, optimum, model, C, n, gap) -> np.ndarray:
    """Rows whose predicted class a model `gap` above the optimum's objective may give otherwise than the optimum.

    The objective is (1 / (C n))-strongly convex in W, so |W - W*|_F <= sqrt(2 C n gap); the difference of two of
    a row's logits then moves by at most f |x| that (f = 1 for one logit, sqrt(2) for a pair of softmax columns)
    plus the intercepts' spread (unpenalized, so not held by convexity: measured). The model's logits are
    computed in float32 on its way to a prediction (standardizing, the d-term whitening and the d-term dot
    product): each adds at most about d eps32 (|x| |W| + |b|), allowed 4 times over. A row whose optimum
    margin (top logit minus second) exceeds all that cannot change class."""
    (w, b), (w_opt, b_opt) = model, optimum
    one_logit = w.shape[1] == 1
    radius = np.sqrt(2 * C * n * max(gap, 0.0))
    spread = abs(b - b_opt).item() if one_logit else np.ptp(b - b_opt)
    norm = np.linalg.norm(xs, axis=1)
    rounding = 4 * xs.shape[1] * np.finfo(np.float32).eps * (norm * np.linalg.norm(w) + np.abs(b).sum())
    moved = (1 if one_logit else np.sqrt(2)) * norm * radius + spread + rounding
    return _margins(_decision(xs, w_opt, b_opt)) <= moved


def test_matches_the_reference_solver_on_trained_features():
    """The fast probe gets at least as close to the objective's optimum as scikit-learn's lbfgs (the reference
    it replaced) at the C each chose, within what its stopping rule promises; and its scores differ from the
    optimum's only on rows that its distance from the optimum leaves open.

    The old bound, a fifth of a point (6 rows of 3,000) between the two probes' accuracies, came from no
    derivation: the reference stops on a relative change in the objective or at 500 iterations, which
    promise no distance from the optimum (here about 1e-4 in the objective, enough to leave every row's
    class open), so its accuracy can be held to nothing; the objective is what both minimize."""
    train, val, test = trained_features("synthetic", 6000)
    fast, reference = linear_probe(train, val, test), reference_linear_probe(train, val, test)
    chosen = sorted({fast.C, reference.C})
    probe, fast_models = _fast_models(train, [c for c in C_GRID if c <= max(chosen)])
    # The reference's models, refitted along its own path (strong to weak, warm-started) on its own float32
    # standardized features.
    x_ref = _standardize(train[0], val[0], test[0])
    ref_models, model = {}, None
    for C in sorted(c for c in C_GRID if c <= max(chosen)):
        model = _reference_fit(x_ref[0], train[1], C, warm=model)
        ref_models[C] = (model.coef_.T.astype(np.float64), model.intercept_.astype(np.float64))
    n = len(train[1])
    mean, std = train[0].mean(0), train[0].std(0)
    std[std == 0] = 1
    x, xv, xt = ((a.astype(np.float64) - mean) / std for a in (train[0], val[0], test[0]))
    for C in chosen:
        # The optimum: scikit-learn's lbfgs in float64, to a gradient far below anything asserted here.
        tight = LogisticRegression(C=C, tol=1e-9, max_iter=20000).fit(x, train[1])
        optimum = (tight.coef_.T, tight.intercept_)
        best = _objective(x, train[1], *optimum, C)
        w, b, raw, promised = fast_models[C]
        ours, theirs = _objective(x, train[1], w, b, C), _objective(x, train[1], *ref_models[C], C)
        assert best - 1e-9 <= ours <= best + promised, (C, ours - best, promised)
        # Hence at least as close as the reference (which cannot lie below the optimum), up to that promise.
        assert theirs >= best - 1e-9 and ours <= theirs + promised, (C, ours - best, theirs - best)
        if C != fast.C:
            continue
        # The scores at the chosen C: the probe's own predictions (float32) against the optimum's, which may
        # differ only on the open rows; accuracy by at most their share, macro-F1 by at most 3 m / S_c per
        # class when m rows change (F = 2T / (S + P), T and P each moving by at most m, T <= S).
        for (features, ys), xs, acc, f1 in ((val, xv, fast.val_acc, fast.val_f1), (test, xt, fast.test_acc, fast.test_f1)):
            predicted = tight.classes_[probe.problem.predict(raw, probe.basis.standardize(
                torch.as_tensor(features, dtype=torch.float32))).numpy()]
            open_rows = _open_rows(xs, optimum, (w, b), C, n, ours - best)
            assert not ((predicted != tight.predict(xs)) & ~open_rows).any()
            assert open_rows.mean() < 0.5, open_rows.mean()  # the bound leaves most rows decided: not vacuous
            assert (acc, f1) == accuracy_and_macro_f1(ys, predicted)  # the refit is the probe's own model
            best_acc, best_f1 = accuracy_and_macro_f1(ys, tight.predict(xs))
            assert abs(acc - best_acc) <= open_rows.mean() + 1e-12
            assert abs(f1 - best_f1) <= 3 * open_rows.sum() * np.mean(1 / np.bincount(ys)[np.unique(ys)]) + 1e-12


def _objective(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, C: float) -> float:
    """scikit-learn's (and the probe's) objective divided by C n, in float64: mean cross-entropy + |W|^2 / (2 C n)
    (for two classes, the one logit's binomial cross-entropy, as the softmax of [0, z])."""
    z = _decision(x, w, b)
    top = z.max(1, keepdims=True)
    log_p = z - top - np.log(np.exp(z - top).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean() + (w ** 2).sum() / (2 * C * len(y)))


def _margins(z: np.ndarray) -> np.ndarray:
    top2 = np.sort(z, 1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def test_multiclass_trained_features_reach_scikit_learns_optimum():
    """The probe's solution is as close to the objective's optimum as its stopping rule promises, and where that
    closeness decides most rows (the grid's strongest C), its predictions differ from the optimum's only on the
    rows it leaves open.

    12 classes on 1,500 rows are nearly separable at weak regularization, so many rows lie near a class
    boundary and a solution inside the solver's tolerance may put a different few of them on the other
    side on another CPU (an AMD EPYC saw 2 of 500 validation rows flip): accuracies cannot be held to a
    fixed count of rows, only to the rows the distance from the optimum leaves open."""
    train, val, test = trained_features("shapes-captions", 1500)
    assert len(np.unique(train[1])) == TASKS.get("shapes-captions")().num_classes
    fast = linear_probe(train, val, test)
    # The probe's model at its chosen C, reached as linear_probe reaches it (strong to weak, warm-started).
    probe = _Probe(train, torch.device("cpu"))
    for C in sorted(c for c in C_GRID if c <= fast.C):
        raw = probe.fit(C)
    d, k, n = probe.basis.rank, probe.problem.outputs, len(train[1])
    w = (probe.basis.whiten.double() @ raw[: d * k].view(d, k).double()).numpy()
    b = raw[d * k:].double().numpy()
    mean, std = train[0].mean(0), train[0].std(0)
    std[std == 0] = 1
    x, xv, xt = ((a.astype(np.float64) - mean) / std for a in (train[0], val[0], test[0]))
    # The optimum: scikit-learn's lbfgs on the same objective in float64 (the features are float32, on which
    # scikit-learn would solve in float32 too), to a gradient far below anything asserted here.
    tight = LogisticRegression(C=fast.C, tol=1e-9, max_iter=20000).fit(x, train[1])
    ours, best = _objective(x, train[1], w, b, fast.C), _objective(x, train[1], tight.coef_.T, tight.intercept_, fast.C)
    # What the stopping rule promises. L-BFGS stops once every one of the D = d k weight coordinates of its
    # curvature-scaled gradient is within GRADIENT_TOLERANCE (t) of 0. The penalty alone gives the
    # objective a curvature of s^2 / (C n lam_j) along scaled coordinate (j, c) (s: the probe's scale,
    # lam_j: the floored eigenvalue it whitens by), and the data term adds a positive semi-definite part, so
    # the Hessian is at least mu = min s^2 / (C n lam_j) and the objective within |g|^2 / (2 mu) <=
    # D t^2 / (2 mu) of the optimum. (The k intercepts, unpenalized, are left out: their gradient is held to
    # t as well.) Near separability mu is small (C n = 15,000 here), so this allows far more than the
    # 1e-7 that harness/running/probe.py's GRADIENT_TOLERANCE note gives for well-conditioned features.
    step = probe.problem.step_scale.double()
    mu = float((step.square() / (fast.C * n * probe.basis.floored.double()[:, None])).min())
    promised = d * k * GRADIENT_TOLERANCE ** 2 / (2 * mu)
    assert best - 1e-9 <= ours <= best + promised, (ours, best, promised)
    # The scores it reports are its own model's predictions.
    for (features, ys), acc, f1 in ((val, fast.val_acc, fast.val_f1), (test, fast.test_acc, fast.test_f1)):
        predicted = tight.classes_[probe.problem.predict(raw, probe.basis.standardize(
            torch.as_tensor(features, dtype=torch.float32))).numpy()]
        assert (acc, f1) == accuracy_and_macro_f1(ys, predicted)
    # Which rows that closeness leaves open (`_open_rows`, as in the binary test). At the chosen C the bound
    # decides nothing: its strong convexity 1 / (C n) is weak at C n = 15,000 and the unpenalized intercepts
    # drift (a rerun of this setup: radius 2.0 and an intercept spread of 7.7 against median margins of 0.55,
    # every row open), so a check there would pass any predictions. The row-level claim is checked where the
    # bound decides most rows: at the grid's strongest C, the first fit of the probe's own path.
    C = C_GRID[0]
    path, models = _fast_models(train, [C])
    w, b, raw, promised = models[C]
    strong = LogisticRegression(C=C, tol=1e-9, max_iter=20000).fit(x, train[1])
    optimum = (strong.coef_.T, strong.intercept_)
    ours, best = _objective(x, train[1], w, b, C), _objective(x, train[1], *optimum, C)
    assert best - 1e-9 <= ours <= best + promised, (C, ours - best, promised)
    for (features, ys), xs in ((val, xv), (test, xt)):
        predicted = strong.classes_[path.problem.predict(raw, path.basis.standardize(
            torch.as_tensor(features, dtype=torch.float32))).numpy()]
        open_rows = _open_rows(xs, optimum, (w, b), C, n, ours - best)
        assert open_rows.mean() < 0.5, open_rows.mean()  # the bound leaves most rows decided: not vacuous
        assert not ((predicted != strong.predict(xs)) & ~open_rows).any()
        assert abs(np.mean(predicted == ys) - strong.score(xs, ys)) <= open_rows.mean() + 1e-12
