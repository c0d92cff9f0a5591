"""Metrics and the patient-level, class-stratified bootstrap (METHODS.md section 4).

A bootstrap resample draws patients with replacement within strata (a patient's
stratum is their rarest class in the test set), so every class stays in every
resample and a patient's images move together. A resample is a (B, P) matrix of
patient multiplicities; metrics are computed for all resamples at once with
per-image weights. Paired deltas between two models use the same matrix.
"""

from __future__ import annotations

import numpy as np


def balanced_accuracy(y: np.ndarray, scores: np.ndarray) -> float:
    return float(weighted_bacc(np.asarray(y), np.asarray(scores), np.ones((1, len(y))))[0])


def macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    return float(weighted_auc(np.asarray(y), np.asarray(scores), np.ones((1, len(y))))[0])


def weighted_bacc(y_n: np.ndarray, scores_nk: np.ndarray, weights_bn: np.ndarray) -> np.ndarray:
    """Balanced accuracy (mean recall over classes present) for each row of weights."""
    n_classes = scores_nk.shape[1]
    pred_n = scores_nk.argmax(axis=1)
    onehot_nk = np.eye(n_classes)[y_n]
    total_bk = weights_bn @ onehot_nk
    correct_bk = weights_bn @ (onehot_nk * (pred_n == y_n)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_bk = correct_bk / total_bk
    return np.nanmean(np.where(total_bk > 0, recall_bk, np.nan), axis=1)


def weighted_binary_auc(score_n: np.ndarray, positive_n: np.ndarray, weights_bn: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count one half) for each row of weights; NaN without both classes."""
    order = np.argsort(score_n, kind="mergesort")
    s, pos = score_n[order], positive_n[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    w = weights_bn[:, order]
    neg_bg = np.add.reduceat(w * ~pos, starts, axis=1)
    pos_bg = np.add.reduceat(w * pos, starts, axis=1)
    neg_below_bg = np.cumsum(neg_bg, axis=1) - neg_bg
    numerator = (pos_bg * (neg_below_bg + 0.5 * neg_bg)).sum(axis=1)
    denominator = pos_bg.sum(axis=1) * neg_bg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def weighted_auc(y_n: np.ndarray, scores_nk: np.ndarray, weights_bn: np.ndarray) -> np.ndarray:
    """Binary AUC on the positive-class score, or one-vs-rest macro AUC over classes present."""
    n_classes = scores_nk.shape[1]
    if n_classes == 2:
        return weighted_binary_auc(scores_nk[:, 1], y_n == 1, weights_bn)
    per_class = [weighted_binary_auc(scores_nk[:, k], y_n == k, weights_bn)
                 for k in range(n_classes) if (y_n == k).any()]
    return np.nanmean(np.stack(per_class), axis=0)


METRICS = {"bacc": weighted_bacc, "auc": weighted_auc}


def patient_strata(y_n: np.ndarray, patient_index_n: np.ndarray, n_patients: int) -> np.ndarray:
    """Each patient's rarest class in this set (the stratum it is resampled in)."""
    counts = np.bincount(y_n)
    rarity = np.argsort(np.argsort(counts, kind="stable"), kind="stable")  # 0 = rarest class
    stratum = np.full(n_patients, np.iinfo(np.int64).max)
    np.minimum.at(stratum, patient_index_n, rarity[y_n])
    return stratum


def resample_matrix(strata_p: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, P) multiplicities: patients drawn with replacement within each stratum."""
    counts_bp = np.zeros((n_boot, len(strata_p)), dtype=np.float64)
    for stratum in np.unique(strata_p):
        members = np.flatnonzero(strata_p == stratum)
        draws = rng.integers(0, len(members), size=(n_boot, len(members)))
        rows = np.repeat(np.arange(n_boot), len(members))
        np.add.at(counts_bp, (rows, members[draws.ravel()]), 1.0)
    return counts_bp


def percentile_ci(values_b: np.ndarray, level: float) -> tuple[float, float]:
    finite = values_b[np.isfinite(values_b)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(finite, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_p_value(delta_b: np.ndarray) -> float:
    """Two-sided bootstrap p-value for 'no difference' (add-one smoothed)."""
    finite = delta_b[np.isfinite(delta_b)]
    if finite.size == 0:
        return float("nan")
    below = (np.sum(finite <= 0) + 1) / (finite.size + 1)
    above = (np.sum(finite >= 0) + 1) / (finite.size + 1)
    return float(min(1.0, 2 * min(below, above)))
