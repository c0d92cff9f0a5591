"""Linear probe on frozen features: logistic regression, regularisation chosen on validation.

Features are standardised with statistics of the probe's own training subset. The
inverse regularisation C is chosen by validation macro AUC (ties: balanced accuracy,
then the smaller C); the test split is never looked at before the choice is made.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from benchmark.stats import balanced_accuracy, macro_auc


def _full_proba(clf: LogisticRegression, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities for every task class; classes absent from training get 0."""
    proba = np.zeros((len(x), n_classes))
    proba[:, clf.classes_.astype(int)] = clf.predict_proba(x)
    return proba


def fit_probe_grid(x_train, y_train, x_val, y_val, n_classes: int, Cs: list[float], max_iter: int, seed: int):
    """Return (scaler, one fit per C in increasing order: {"C", "val_auc", "val_bacc", "clf"}).

    Every C is fitted from scratch: warm-starting along the path stops early at weak
    regularisation and can change the choice (measured in ``benchmark/perf/probe.py``)."""
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"the probe's training subset has a single class ({np.unique(y_train)})")
    scaler = StandardScaler().fit(x_train)
    xt, xv = scaler.transform(x_train), scaler.transform(x_val)
    fits = []
    for C in sorted(Cs):
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xt, y_train)
        proba = _full_proba(clf, xv, n_classes)
        fits.append({"C": C, "val_auc": macro_auc(y_val, proba), "val_bacc": balanced_accuracy(y_val, proba),
                     "clf": clf})
    return scaler, fits


def chosen_fit(fits: list[dict]) -> dict:
    """The fit with the best validation macro AUC (ties: balanced accuracy, then the smaller C)."""
    return max(fits, key=lambda r: (np.nan_to_num(r["val_auc"], nan=-1), r["val_bacc"], -r["C"]))


def sweep_table(fits: list[dict]) -> list[dict]:
    """The validation scores of every C, without the fitted classifiers (for the JSON record)."""
    return [{k: v for k, v in fit.items() if k != "clf"} for fit in fits]


def fit_probe(x_train, y_train, x_val, y_val, n_classes: int, Cs: list[float], max_iter: int, seed: int):
    """Return (scaler, classifier, chosen C, validation table of every C): ``fit_probe_grid``
    and ``chosen_fit``."""
    scaler, fits = fit_probe_grid(x_train, y_train, x_val, y_val, n_classes, Cs, max_iter, seed)
    best = chosen_fit(fits)
    return scaler, best["clf"], best["C"], sweep_table(fits)


def grid_edge_warning(chosen: float, grid: list[float]) -> str | None:
    """A warning when the chosen C is the smallest or the largest of the grid: the best value
    may lie outside it, so the grid should be widened."""
    if len(grid) > 1 and chosen in (min(grid), max(grid)):
        side = "smallest" if chosen == min(grid) else "largest"
        return f"chosen C {chosen:g} is the {side} of the grid {min(grid):g}..{max(grid):g}; widen linear_probe.C"
    return None


def predict_probe(scaler, clf, x: np.ndarray, n_classes: int) -> np.ndarray:
    return _full_proba(clf, scaler.transform(x), n_classes)


def fit_sgd_probe(x_train, y_train, x_val, y_val, n_classes: int, epochs: int, batch_size: int, seed: int):
    """MaMA's linear-probe protocol: a linear layer on standardised features, SGD with
    momentum 0.9, lr 5e-4, weight decay 1e-3, class-balanced batches; the epoch with the
    best validation macro AUC (ties: balanced accuracy, then the earlier) is kept.
    Returns (scaler, layer, chosen epoch, validation table of every epoch)."""
    import torch

    if len(np.unique(y_train)) < 2:
        raise ValueError(f"the probe's training subset has a single class ({np.unique(y_train)})")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scaler = StandardScaler().fit(x_train)
    xt = torch.from_numpy(scaler.transform(x_train)).float()
    xv = scaler.transform(x_val)
    yt = torch.from_numpy(np.array(y_train, dtype=np.int64))  # a copy: pandas may hand a read-only view
    layer = torch.nn.Linear(xt.shape[1], n_classes)
    optimizer = torch.optim.SGD(layer.parameters(), lr=5e-4, momentum=0.9, weight_decay=1e-3)
    present = np.unique(y_train)
    weight_n = 1.0 / np.bincount(y_train, minlength=n_classes)[y_train]  # every class equally likely
    best, best_key, results = None, None, []
    for epoch in range(1, epochs + 1):
        order = rng.choice(len(xt), size=len(xt), replace=True, p=weight_n / weight_n.sum())
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start:start + batch_size])
            loss = torch.nn.functional.cross_entropy(layer(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        proba = predict_sgd_probe(None, layer, xv, n_classes)
        proba[:, np.setdiff1d(np.arange(n_classes), present)] = 0
        key = (np.nan_to_num(macro_auc(y_val, proba), nan=-1.0), balanced_accuracy(y_val, proba), -epoch)
        results.append({"epoch": epoch, "val_auc": key[0], "val_bacc": key[1]})
        if best_key is None or key > best_key:
            best, best_key = {k: v.clone() for k, v in layer.state_dict().items()}, key
    layer.load_state_dict(best)
    return scaler, layer, -best_key[2], results


def predict_sgd_probe(scaler, layer, x: np.ndarray, n_classes: int) -> np.ndarray:
    import torch

    x = scaler.transform(x) if scaler is not None else x
    with torch.no_grad():
        return torch.softmax(layer(torch.from_numpy(np.asarray(x)).float()), dim=-1).numpy().astype(np.float64)
