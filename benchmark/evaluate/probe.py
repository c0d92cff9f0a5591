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


def fit_probe(x_train, y_train, x_val, y_val, n_classes: int, Cs: list[float], max_iter: int, seed: int):
    """Return (scaler, classifier, chosen C, validation table of every C)."""
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"the probe's training subset has a single class ({np.unique(y_train)})")
    scaler = StandardScaler().fit(x_train)
    xt, xv = scaler.transform(x_train), scaler.transform(x_val)
    results = []
    for C in sorted(Cs):
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(xt, y_train)
        proba = _full_proba(clf, xv, n_classes)
        results.append({"C": C, "val_auc": macro_auc(y_val, proba), "val_bacc": balanced_accuracy(y_val, proba),
                        "clf": clf})
    best = max(results, key=lambda r: (np.nan_to_num(r["val_auc"], nan=-1), r["val_bacc"], -r["C"]))
    return scaler, best["clf"], best["C"], [{k: v for k, v in r.items() if k != "clf"} for r in results]


def predict_probe(scaler, clf, x: np.ndarray, n_classes: int) -> np.ndarray:
    return _full_proba(clf, scaler.transform(x), n_classes)
