"""Metrics and the patient-level, class-stratified bootstrap (docs/protocol.md, Evaluation and Statistics).

A bootstrap resample draws patients with replacement within strata (a patient's
stratum is their rarest class in the test set), so every class stays in every
resample and a patient's images move together. A resample is a (B, P) matrix of
patient multiplicities; metrics are computed for all resamples at once, reading each
unit's weight through its patient: weight[b, i] = counts_bp[b, patient_n[i]]. All
sums over units become sparse (unit -> patient) products, so a metric costs about
B x N multiply-adds and never builds a (B, N) weight matrix.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import sparse


def _patient_sums(patient_n: np.ndarray, group_n: np.ndarray, values_n: np.ndarray, n_patients: int,
                  n_groups: int) -> sparse.csr_matrix:
    """(G, P) sparse matrix: the sum of ``values`` over the units of each (group, patient)."""
    return sparse.csr_matrix((values_n, (group_n, patient_n)), shape=(n_groups, n_patients))


def _weighted(matrix_gp: sparse.csr_matrix, counts_pb: np.ndarray) -> np.ndarray:
    """(G, B): each group's weighted sum in every resample."""
    return np.asarray(matrix_gp @ counts_pb)


def clustered_recalls(y_n: np.ndarray, pred_n: np.ndarray, n_classes: int, counts_bp: np.ndarray,
                      patient_n: np.ndarray) -> np.ndarray:
    """(K, B): each class's recall in every resample; NaN where the class is absent."""
    n_patients = counts_bp.shape[1]
    counts_pb = _counts_pb(counts_bp)
    correct_n = (pred_n == y_n).astype(np.float32)
    total_kb = _weighted(_patient_sums(patient_n, y_n, np.ones(len(y_n), np.float32), n_patients, n_classes),
                         counts_pb).astype(np.float64)
    correct_kb = _weighted(_patient_sums(patient_n, y_n, correct_n, n_patients, n_classes),
                           counts_pb).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total_kb > 0, correct_kb / total_kb, np.nan)


def clustered_bacc(y_n: np.ndarray, scores_nk: np.ndarray, counts_bp: np.ndarray, patient_n: np.ndarray) -> np.ndarray:
    """Balanced accuracy (mean recall over the classes present, argmax prediction) in every resample."""
    recall_kb = clustered_recalls(y_n, scores_nk.argmax(axis=1), scores_nk.shape[1], counts_bp, patient_n)
    present_b = np.isfinite(recall_kb).sum(axis=0)
    return np.where(present_b > 0, np.nansum(recall_kb, axis=0) / np.maximum(present_b, 1), np.nan)


def youden_threshold(y_n: np.ndarray, score_n: np.ndarray) -> float:
    """The score threshold (predict positive at >= t) maximising sensitivity + specificity.

    The criterion is compared in exact integers (positives at or above t times the number
    of negatives, plus negatives below t times the number of positives), so equal Youden
    indices are ties whatever the rounding; a tie goes to the lowest threshold (the most
    sensitive of the best)."""
    positive = np.asarray(y_n) == 1
    if positive.all() or not positive.any():
        return float("nan")
    candidates = np.unique(score_n)
    pos, neg = np.sort(score_n[positive]), np.sort(score_n[~positive])
    true_pos = len(pos) - np.searchsorted(pos, candidates, side="left")  # positives >= t
    true_neg = np.searchsorted(neg, candidates, side="left")  # negatives < t
    youden_scaled = true_pos.astype(np.int64) * len(neg) + true_neg.astype(np.int64) * len(pos)
    return float(candidates[int(np.argmax(youden_scaled))])  # argmax: the first (lowest) of equal maxima


def specificity_threshold(y_n: np.ndarray, score_n: np.ndarray, specificity: float = 0.9) -> float:
    """The lowest score threshold (predict positive at >= t) whose specificity on these
    units is at least ``specificity``: the most sensitive operating point that keeps it.
    Infinite (everything negative) when no observed score reaches it."""
    positive = np.asarray(y_n) == 1
    if positive.all() or not positive.any():
        return float("nan")
    candidates = np.append(np.unique(score_n), np.inf)
    neg = np.sort(score_n[~positive])
    spec = np.searchsorted(neg, candidates, side="left") / len(neg)  # share of negatives < t
    return float(candidates[int(np.argmax(spec >= specificity))])


def clustered_pf1(y_n: np.ndarray, score_n: np.ndarray, counts_bp: np.ndarray, patient_n: np.ndarray) -> np.ndarray:
    """Probabilistic F1 (the RSNA Screening Mammography challenge's metric) in every
    resample: with pTP = sum of positive units' probabilities and pFP the negatives',
    pF1 = 2 pTP / (pTP + pFP + positives)."""
    counts_pb = _counts_pb(counts_bp)
    n_patients = counts_bp.shape[1]
    score_n = np.asarray(score_n, np.float64)
    y_n = np.asarray(y_n)
    groups = np.zeros(len(y_n), int)
    true_positive_b = _weighted(_patient_sums(patient_n, groups, score_n * (y_n == 1), n_patients, 1), counts_pb)[0]
    all_scores_b = _weighted(_patient_sums(patient_n, groups, score_n, n_patients, 1), counts_pb)[0]
    positives_b = _weighted(_patient_sums(patient_n, groups, (y_n == 1).astype(np.float64), n_patients, 1),
                            counts_pb)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives_b > 0, 2 * true_positive_b / (all_scores_b + positives_b), np.nan)


def clustered_sens_spec(y_n: np.ndarray, score_n: np.ndarray, threshold: float, counts_bp: np.ndarray,
                        patient_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity at a fixed threshold (chosen on validation) per resample."""
    if np.isnan(threshold):
        nan = np.full(counts_bp.shape[0], np.nan)
        return nan, nan
    recall_kb = clustered_recalls(np.asarray(y_n, int), (score_n >= threshold).astype(int), 2, counts_bp, patient_n)
    return recall_kb[1], recall_kb[0]


def clustered_binary_auc(score_n: np.ndarray, positive_n: np.ndarray, counts_bp: np.ndarray,
                         patient_n: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties count one half) in every resample; NaN without both classes.

    Positives are grouped by tied score. For each positive group g the weighted count of
    negatives strictly below it is a cumulative sum over the negatives falling between
    consecutive positive groups, so only (positive groups) x B numbers are ever dense."""
    return _binary_auc(score_n, positive_n.astype(bool), _counts_pb(counts_bp), patient_n)


def _counts_pb(counts_bp: np.ndarray) -> np.ndarray:
    """Resample multiplicities as (P, B) float32: exact for counts below 2**24."""
    return np.ascontiguousarray(counts_bp.T, dtype=np.float32)


def _binary_auc(score_n, positive_n, counts_pb, patient_n) -> np.ndarray:
    n_patients, n_boot = counts_pb.shape
    pos_scores = np.unique(score_n[positive_n])  # the positive groups, ascending
    n_groups = len(pos_scores)
    if n_groups == 0 or positive_n.all():
        return np.full(n_boot, np.nan)
    neg_scores, neg_patients = score_n[~positive_n], patient_n[~positive_n]
    # a negative's slot: the first positive group scoring >= it (n_groups: above every positive)
    slot = np.searchsorted(pos_scores, neg_scores, side="left")
    tied = (slot < n_groups) & (pos_scores[np.minimum(slot, n_groups - 1)] == neg_scores)
    ones = np.ones(len(neg_scores), np.float32)
    between_gb = _weighted(_patient_sums(neg_patients[~tied], slot[~tied], ones[~tied], n_patients, n_groups + 1),
                           counts_pb)
    pos_gb = _weighted(_patient_sums(patient_n[positive_n], np.searchsorted(pos_scores, score_n[positive_n]),
                                     np.ones(int(positive_n.sum()), np.float32), n_patients, n_groups), counts_pb)
    # Weighted counts are integers below 2**24, so float32 sums and products are exact;
    # only the sums over groups, which can exceed that, are taken in float64.
    neg_total_b = between_gb.sum(axis=0, dtype=np.float64)
    pos_total_b = pos_gb.sum(axis=0, dtype=np.float64)
    np.cumsum(between_gb, axis=0, out=between_gb)  # now: negatives between, at or below each group
    numerator_b = (pos_gb * between_gb[:n_groups]).sum(axis=0, dtype=np.float64)
    if tied.any():  # negatives tied with positive group h: below every later group, half for h itself
        tied_rows, tied_group = np.unique(slot[tied], return_inverse=True)
        tied_tb = _weighted(_patient_sums(neg_patients[tied], tied_group, ones[tied], n_patients, len(tied_rows)),
                            counts_pb).astype(np.float64)
        pos_at_or_below_tb = np.cumsum(pos_gb, axis=0, dtype=np.float64)[tied_rows]
        pos_at_tb = pos_gb[tied_rows].astype(np.float64)
        numerator_b += (tied_tb * (pos_total_b - pos_at_or_below_tb + 0.5 * pos_at_tb)).sum(axis=0)
        neg_total_b += tied_tb.sum(axis=0)
    denominator_b = pos_total_b * neg_total_b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator_b > 0, numerator_b / denominator_b, np.nan)


def clustered_auc(y_n: np.ndarray, scores_nk: np.ndarray, counts_bp: np.ndarray, patient_n: np.ndarray) -> np.ndarray:
    """Binary AUC on the positive-class score, or one-vs-rest macro AUC over the classes present."""
    counts_pb = _counts_pb(counts_bp)
    n_classes = scores_nk.shape[1]
    if n_classes == 2:
        return _binary_auc(scores_nk[:, 1], y_n == 1, counts_pb, patient_n)
    present = [k for k in range(n_classes) if (y_n == k).any()]
    # numpy and scipy release the GIL in the heavy loops: classes run side by side
    with ThreadPoolExecutor(max_workers=min(len(present), os.cpu_count() or 1)) as pool:
        per_class = list(pool.map(lambda k: _binary_auc(scores_nk[:, k], y_n == k, counts_pb, patient_n), present))
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.stack(per_class), axis=0)


def weighted_bacc(y_n: np.ndarray, scores_nk: np.ndarray, weights_bn: np.ndarray) -> np.ndarray:
    """Balanced accuracy under per-unit weights (each unit its own cluster)."""
    return clustered_bacc(y_n, scores_nk, weights_bn, np.arange(len(y_n)))


def weighted_auc(y_n: np.ndarray, scores_nk: np.ndarray, weights_bn: np.ndarray) -> np.ndarray:
    return clustered_auc(y_n, scores_nk, weights_bn, np.arange(len(y_n)))


def balanced_accuracy(y: np.ndarray, scores: np.ndarray) -> float:
    return float(weighted_bacc(np.asarray(y), np.asarray(scores), np.ones((1, len(y))))[0])


def macro_auc(y: np.ndarray, scores: np.ndarray) -> float:
    return float(weighted_auc(np.asarray(y), np.asarray(scores), np.ones((1, len(y))))[0])


def patient_strata(y_n: np.ndarray, patient_index_n: np.ndarray, n_patients: int) -> np.ndarray:
    """Each patient's rarest class in this set (the stratum it is resampled in)."""
    counts = np.bincount(y_n)
    rarity = np.argsort(np.argsort(counts, kind="stable"), kind="stable")  # 0 = rarest class
    stratum = np.full(n_patients, np.iinfo(np.int64).max)
    np.minimum.at(stratum, patient_index_n, rarity[y_n])
    return stratum


def resample_matrix(strata_p: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 32) -> np.ndarray:
    """(n_boot, P) float32 multiplicities: patients drawn with replacement within each
    stratum. Built ``chunk`` resamples at a time so that the counting stays in cache."""
    n_patients = len(strata_p)
    members = [np.flatnonzero(strata_p == stratum) for stratum in np.unique(strata_p)]
    counts_bp = np.zeros((n_boot, n_patients), np.float32)
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        offset_r1 = (np.arange(rows) * n_patients)[:, None]
        flat = [(m[rng.integers(0, len(m), size=(rows, len(m)))] + offset_r1).ravel() for m in members]
        if flat:
            counts = np.bincount(np.concatenate(flat), minlength=rows * n_patients)
            counts_bp[start:start + rows] = counts.reshape(rows, n_patients)
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


@dataclass(frozen=True)
class Replicates:
    """One model's values in one cell, per replicate (pretraining seed, label draw): the
    full-test-set value and its values on the shared patient resamples."""

    full_r: np.ndarray  # (R,)
    boot_rb: np.ndarray  # (R, B)
    seed_r: np.ndarray  # (R,) the pretraining seed of each replicate
    draw_r: np.ndarray  # (R,) the label draw of each replicate (0 where there is one)

    def minus(self, other: Replicates) -> Replicates:
        """Replicate by replicate difference with the same seeds and draws (a subgroup's gap)."""
        if not (np.array_equal(self.seed_r, other.seed_r) and np.array_equal(self.draw_r, other.draw_r)):
            raise ValueError("replicates differ: a paired difference needs the same seeds and draws")
        return Replicates(self.full_r - other.full_r, self.boot_rb - other.boot_rb, self.seed_r, self.draw_r)


@dataclass(frozen=True)
class MethodLevel:
    """A method-level estimate: its interval, two-sided p-value for 0, and the parts of its variance."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    variance_patients: float
    variance_seeds: float
    variance_draws: float
    df_seeds: int = 0  # degrees of freedom of the seed part, summed over terms (0: not estimated)
    df_draws: int = 0
    df: float = float("inf")  # of the t reference (inf: the patient bootstrap alone)

    def clipped(self, low: float, high: float) -> tuple[float, float]:
        """The interval within the quantity's range (every registered metric is a proportion)."""
        return max(self.ci_low, low), min(self.ci_high, high)


def _group_means(labels_r: np.ndarray, full_r: np.ndarray, boot_rb: np.ndarray):
    """Means of the replicates sharing a label: (G,) full-set and (G, B) resampled."""
    groups = np.unique(labels_r)
    weights_gr = (labels_r[None, :] == groups[:, None]).astype(float)
    weights_gr /= weights_gr.sum(axis=1, keepdims=True)
    return weights_gr @ full_r, weights_gr @ boot_rb


def _spread(means_g: np.ndarray, means_gb: np.ndarray) -> tuple[float, float]:
    """The between-group variance of the mean of G group means, S^2 / G, and the part of it
    that the test set's sampling alone explains, W / G.

    S^2, the sample variance of the G full-set means, estimates tau^2 + w: the variance of
    the groups' effect (a seed's) plus the part of a mean's test-set error that the other
    groups do not share (each checkpoint errs on its own images). W estimates w from the
    patient resamples: sum_g var_b(mean_gb - mean over g) / (G - 1), whose expectation is
    that of S^2 when tau = 0."""
    n = len(means_g)
    deviations_gb = means_gb - means_gb.mean(axis=0, keepdims=True)
    return float(np.var(means_g, ddof=1)) / n, float(np.var(deviations_gb, axis=1, ddof=1).sum() / (n - 1)) / n


DF_QUANTILE = 0.25  # Satterthwaite's degrees of freedom use each variance part at its 75 % upper bound


def method_level_test(terms: list[tuple[float, Replicates]], level: float) -> MethodLevel:
    """Method-level inference on sum_t c_t x mean(term t), e.g. a model's value ([(1, A)]) or
    its delta to the reference ([(1, A), (-1, Ref)]): seeds are drawn per model, label draws
    are the same patients for every model.

    The variance is the sum of three parts (docs/protocol.md, Statistics):
    - seeds: for each term, S^2 / n from the spread of its seed means (each the mean over
      the cell's draws). With equal seed counts the terms' parts together, on the sum of
      their n - 1 degrees of freedom (the pooled two-sample t test, robust to unequal seed
      variances when the counts are equal); with unequal counts (a model given more seeds,
      e.g. an untrained control) each term's part on its own n - 1 (Welch-Satterthwaite:
      pooling would lend the few seeds of one term the degrees of freedom of the many of
      another);
    - patients: what the test set's sampling puts into the estimate and every seed shares:
      the variance over the shared patient resamples, less each term's seed-specific part
      W / n (``_spread``), which S^2 already holds; floored at 0 and taken as known;
    - draws (fractions below 1): S^2 / n of the combined per-draw estimate (draws are the
      same patients for every model, so paired), on n - 1 degrees of freedom; its test-set
      part is not subtracted, so with draws the variance errs on the large side.
    The reference distribution is Student's t with Satterthwaite's degrees of freedom, each
    estimated part entering that formula (not the variance) at its 75 % upper confidence
    bound, nu S^2 / chi^2_{nu, 0.25}. With plain Satterthwaite the degrees of freedom grow
    exactly when the few seeds happen to agree, and a true null is rejected up to 8 % of
    the time at 0.05 with two seeds; with the bound the level holds within 0.038 to 0.051
    for any share of the seed part from two seeds on (``benchmark/calibration.py``, which
    also runs null data sets through the table). Without any replicate spread to estimate
    (one seed, one draw) it is the patient bootstrap itself: the percentile interval and the
    bootstrap p-value."""
    from scipy.stats import chi2
    from scipy.stats import t as student_t

    estimate = float(sum(c * np.mean(rep.full_r) for c, rep in terms))
    combined_b = sum(c * np.mean(rep.boot_rb, axis=0) for c, rep in terms)
    finite = np.isfinite(combined_b)
    for _, rep in terms:
        finite &= np.isfinite(rep.boot_rb).all(axis=0)
    if not np.isfinite(estimate) or finite.sum() < 2:
        nan = float("nan")
        return MethodLevel(estimate, nan, nan, nan, nan, nan, nan)
    seed_parts, seed_specific = [], 0.0  # (variance, degrees of freedom) of each term's seed part
    for c, rep in terms:
        if len(np.unique(rep.seed_r)) > 1:
            between, within = _spread(*_group_means(rep.seed_r, rep.full_r, rep.boot_rb[:, finite]))
            seed_parts.append((c**2 * between, len(np.unique(rep.seed_r)) - 1))
            seed_specific += c**2 * within
    variance_seeds, df_seeds = sum(v for v, _ in seed_parts), sum(df for _, df in seed_parts)
    if len({df for _, df in seed_parts}) < 2:  # equal seed counts: pooled
        seed_parts = [(variance_seeds, df_seeds)] if df_seeds else []
    variance_draws, df_draws = 0.0, 0
    draws = [np.unique(rep.draw_r) for _, rep in terms]
    if len(draws[0]) > 1 and all(np.array_equal(d, draws[0]) for d in draws):
        per_draw = [_group_means(rep.draw_r, rep.full_r, rep.boot_rb[:, finite]) for _, rep in terms]
        means_d = sum(c * full for (c, _), (full, _) in zip(terms, per_draw))
        means_db = sum(c * boot for (c, _), (_, boot) in zip(terms, per_draw))
        variance_draws, df_draws = _spread(means_d, means_db)[0], len(means_d) - 1
    patients = float(np.var(combined_b[finite], ddof=1))
    if not df_seeds and not df_draws:  # nothing but the patients: the bootstrap as it is
        lo, hi = percentile_ci(combined_b, level)
        return MethodLevel(estimate, lo, hi, paired_p_value(combined_b), patients, 0.0, 0.0)
    variance_patients = max(0.0, patients - seed_specific)
    variance = variance_patients + variance_seeds + variance_draws
    bounds = [(v * df / chi2.ppf(DF_QUANTILE, df), df) for v, df in [*seed_parts, (variance_draws, df_draws)] if df]
    bounded = variance_patients + sum(v for v, _ in bounds)
    denominator = sum(v**2 / df for v, df in bounds)
    df = bounded**2 / denominator if denominator > 0 else float("inf")
    se = float(np.sqrt(variance))
    half = float(student_t.ppf(0.5 + level / 2, df) * se)
    p_value = float(2 * student_t.sf(abs(estimate) / se, df)) if se > 0 else float(estimate == 0)
    return MethodLevel(estimate, estimate - half, estimate + half, p_value, variance_patients, variance_seeds,
                       variance_draws, df_seeds, df_draws, float(df))


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN ones are not in the family):
    the i-th smallest becomes max over j <= i of min(1, (m - j + 1) p_(j))."""
    p_values = np.asarray(p_values, float)
    adjusted = np.full_like(p_values, np.nan)
    present = np.flatnonzero(~np.isnan(p_values))
    order = present[np.argsort(p_values[present], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def delong_paired(positive_n: np.ndarray, score_a_n: np.ndarray, score_b_n: np.ndarray,
                  cluster_n: np.ndarray | None = None) -> tuple[float, float]:
    """DeLong's test of AUC(a) = AUC(b) on the same units (``delong_contrast`` with weights +1, -1)."""
    return delong_contrast(positive_n, np.stack([score_a_n, score_b_n]), np.array([1.0, -1.0]), cluster_n)


def delong_contrast(positive_n: np.ndarray, scores_kn: np.ndarray, weights_k: np.ndarray,
                    cluster_n: np.ndarray | None = None) -> tuple[float, float]:
    """DeLong's test of sum_k w_k AUC_k = 0 for K scorers of the same units, clustered by
    ``cluster_n`` (the patient) as in Obuchowski (1997, Biometrics 53:567); without clusters,
    every unit is its own cluster and this is DeLong, DeLong and Clarke-Pearson (1988).
    A table row's delta is such a contrast: the mean AUC over its model's replicates minus
    the mean over the reference's (weights 1/n and -1/m).

    With structural components V10 (a positive unit's share of negatives it outscores, ties
    one half) and V01 (a negative unit's share of positives that outscore it), summed per
    cluster i to A_i = sum V10 - m_i AUC and B_i = sum V01 - n_i AUC (m_i, n_i: the
    cluster's positive and negative units; M, N their totals; I10, I01, I the clusters with
    a positive unit, with a negative unit, and in all):

        cov(AUC_r, AUC_s) = I10 / ((I10 - 1) M^2) sum A_i^r A_i^s + I01 / ((I01 - 1) N^2) sum B_i^r B_i^s
                            + I / ((I - 1) M N) sum (A_i^r B_i^s + B_i^r A_i^s)

    Returns (the contrast, two-sided p-value of the normal test w' AUC / sqrt(w' cov w)); NaN
    when a class has fewer than two clusters."""
    from scipy.stats import norm, rankdata

    positive_n = np.asarray(positive_n, bool)
    weights_k = np.asarray(weights_k, float)
    cluster_n = np.arange(len(positive_n)) if cluster_n is None else np.unique(cluster_n, return_inverse=True)[1]
    m, n = int(positive_n.sum()), int((~positive_n).sum())
    n_clusters = int(cluster_n.max()) + 1 if len(cluster_n) else 0
    i10, i01 = len(np.unique(cluster_n[positive_n])), len(np.unique(cluster_n[~positive_n]))
    if i10 < 2 or i01 < 2:
        return float("nan"), float("nan")
    m_i = np.bincount(cluster_n[positive_n], minlength=n_clusters)
    n_i = np.bincount(cluster_n[~positive_n], minlength=n_clusters)
    a_ki, b_ki, aucs = [], [], []
    for score in np.asarray(scores_kn, float):
        pos, neg = score[positive_n], score[~positive_n]
        tx, ty, tz = rankdata(pos), rankdata(neg), rankdata(np.concatenate([pos, neg]))  # mid-ranks
        auc = (tz[:m].sum() - m * (m + 1) / 2) / (m * n)
        v10, v01 = (tz[:m] - tx) / n, 1 - (tz[m:] - ty) / m
        a_ki.append(np.bincount(cluster_n[positive_n], v10, minlength=n_clusters) - m_i * auc)
        b_ki.append(np.bincount(cluster_n[~positive_n], v01, minlength=n_clusters) - n_i * auc)
        aucs.append(auc)
    a_ki, b_ki = np.array(a_ki), np.array(b_ki)
    cov_kk = (i10 / ((i10 - 1) * m**2) * a_ki @ a_ki.T + i01 / ((i01 - 1) * n**2) * b_ki @ b_ki.T
              + n_clusters / ((n_clusters - 1) * m * n) * (a_ki @ b_ki.T + b_ki @ a_ki.T))
    variance = float(weights_k @ cov_kk @ weights_k)
    contrast = float(weights_k @ np.array(aucs))
    if variance <= 1e-15:
        return contrast, 1.0 if abs(contrast) < 1e-12 else 0.0
    return contrast, float(2 * norm.sf(abs(contrast) / np.sqrt(variance)))
