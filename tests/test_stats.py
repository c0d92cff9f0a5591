import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from benchmark.stats import (
    balanced_accuracy,
    macro_auc,
    paired_p_value,
    patient_strata,
    percentile_ci,
    resample_matrix,
    weighted_auc,
    weighted_bacc,
)


def _data(n=600, k=4, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + signal * np.eye(k)[y]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, scores


@pytest.mark.parametrize("k", [2, 4, 7])
def test_point_estimates_equal_sklearn(k):
    y, scores = _data(k=k)
    assert balanced_accuracy(y, scores) == pytest.approx(balanced_accuracy_score(y, scores.argmax(1)), abs=1e-12)
    expected = roc_auc_score(y, scores[:, 1]) if k == 2 else roc_auc_score(y, scores, multi_class="ovr")
    assert macro_auc(y, scores) == pytest.approx(expected, abs=1e-12)


def test_auc_with_ties_and_weights_equals_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    score = np.round(rng.random(300) + 0.3 * y, 1)  # many ties
    w = rng.integers(0, 4, 300).astype(float)
    ours = weighted_auc(y, np.stack([1 - score, score], 1), w[None])[0]
    assert ours == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)
    ours_bacc = weighted_bacc(y, np.stack([1 - score, score], 1), w[None])[0]
    assert ours_bacc == pytest.approx(
        balanced_accuracy_score(y, (score > 0.5).astype(int), sample_weight=w), abs=1e-12)


def test_resamples_keep_every_stratum_and_its_size():
    strata = np.array([0] * 5 + [1] * 30 + [2] * 2)
    m = resample_matrix(strata, 500, np.random.default_rng(0))
    assert m.shape == (500, 37)
    for s in range(3):
        assert (m[:, strata == s].sum(1) == (strata == s).sum()).all()


def test_rarest_class_defines_stratum():
    y = np.array([1, 1, 0, 1, 2, 1])
    patient = np.array([0, 0, 1, 1, 2, 2])
    # class counts: 0 -> 1, 1 -> 4, 2 -> 1; rarity rank 0 is class 0 (stable), then 2, then 1
    assert patient_strata(y, patient, 3).tolist() == [2, 0, 1]


def _ci_width(y, scores, patient, n_boot=400):
    patients, index = np.unique(patient, return_inverse=True)
    strata = patient_strata(y, index, len(patients))
    m = resample_matrix(strata, n_boot, np.random.default_rng(0))
    lo, hi = percentile_ci(weighted_auc(y, scores, m[:, index]), 0.95)
    return hi - lo


def test_patient_level_resampling_is_not_fooled_by_repeated_images():
    """Copying every patient's image 8 times adds no information: the interval must not shrink
    the way image-level resampling would shrink it (about 1/sqrt(8))."""
    y, scores = _data(n=200, k=2, seed=3, signal=1.0)
    base = _ci_width(y, scores, np.arange(200))
    repeated = _ci_width(np.repeat(y, 8), np.repeat(scores, 8, axis=0), np.repeat(np.arange(200), 8))
    image_level = _ci_width(np.repeat(y, 8), np.repeat(scores, 8, axis=0), np.arange(1600))
    assert repeated == pytest.approx(base, rel=0.25)
    assert image_level < 0.6 * base


def test_interval_covers_value_and_agrees_with_scipy_on_independent_data():
    from scipy.stats import bootstrap

    y, scores = _data(n=400, k=2, seed=5)
    width = _ci_width(y, scores, np.arange(400), n_boot=2000)
    res = bootstrap((y, scores[:, 1]), lambda a, b: roc_auc_score(a, b), paired=True, vectorized=False,
                    n_resamples=2000, method="percentile", random_state=0)
    scipy_width = res.confidence_interval.high - res.confidence_interval.low
    assert width == pytest.approx(scipy_width, rel=0.15)


def test_paired_p_value():
    assert paired_p_value(np.full(1000, 0.05)) < 0.01
    symmetric = np.random.default_rng(0).normal(0, 1, 4000)
    assert paired_p_value(symmetric) > 0.5


def test_clustered_metrics_equal_weighted_metrics_through_patients():
    from benchmark.stats import clustered_auc, clustered_bacc

    y, scores = _data(n=500, k=4, seed=7)
    scores = np.round(scores, 2)  # ties
    patient = np.random.default_rng(0).integers(0, 150, 500)
    counts = np.random.default_rng(1).integers(0, 3, (40, 150)).astype(float)
    assert np.allclose(clustered_auc(y, scores, counts, patient), weighted_auc(y, scores, counts[:, patient]),
                       equal_nan=True)
    assert np.allclose(clustered_bacc(y, scores, counts, patient), weighted_bacc(y, scores, counts[:, patient]))


def test_delong_matches_its_definition_and_the_bootstrap():
    from benchmark.stats import delong_paired

    y, scores = _data(n=400, k=2, seed=11)
    noisy = scores[:, 1] + np.random.default_rng(2).normal(0, 0.3, 400)
    delta, p = delong_paired(y == 1, scores[:, 1], noisy)
    assert delta == pytest.approx(roc_auc_score(y, scores[:, 1]) - roc_auc_score(y, noisy), abs=1e-12)
    m = resample_matrix(patient_strata(y, np.arange(400), 400), 2000, np.random.default_rng(0))
    boot_delta = weighted_auc(y, scores, m) - weighted_auc(y, np.stack([-noisy, noisy], 1), m)
    assert (p < 0.05) == (paired_p_value(boot_delta) < 0.05)
    assert delong_paired(y == 1, scores[:, 1], scores[:, 1]) == (0.0, 1.0)
    assert np.isnan(delong_paired(np.zeros(10, bool), np.arange(10.0), np.arange(10.0))[1])


def _clustered_null(rng, n_patients=150):
    """Two scorers with equal AUC on 4 images per patient (2 breasts x 2 views, a breast
    positive with p 0.2); each scorer has its own patient effect, so their difference is
    correlated within a patient."""
    patient = np.repeat(np.arange(n_patients), 4)
    y = np.repeat(rng.random(2 * n_patients) < 0.2, 2)
    shared = np.repeat(rng.normal(size=n_patients), 4)
    a = y + shared + np.repeat(rng.normal(size=n_patients), 4) + 0.5 * rng.normal(size=4 * n_patients)
    b = y + shared + np.repeat(rng.normal(size=n_patients), 4) + 0.5 * rng.normal(size=4 * n_patients)
    return y, a, b, patient


def test_clustered_delong_holds_its_size_where_the_independent_one_does_not():
    """Type-I error at 0.05 over 400 simulated null data sets: Obuchowski's clustered DeLong
    stays near 0.05 (binomial sd 0.011), DeLong treating images as independent does not."""
    from benchmark.stats import delong_paired

    rng = np.random.default_rng(0)
    clustered = independent = 0
    for _ in range(400):
        y, a, b, patient = _clustered_null(rng)
        clustered += delong_paired(y, a, b, patient)[1] < 0.05
        independent += delong_paired(y, a, b)[1] < 0.05
    assert 0.025 <= clustered / 400 <= 0.08
    assert independent / 400 >= 0.10


def test_clustered_delong_with_singleton_clusters_is_delong():
    from benchmark.stats import delong_paired

    y, scores = _data(n=300, k=2, seed=5)
    other = scores[:, 1] + np.random.default_rng(3).normal(0, 0.2, 300)
    assert delong_paired(y == 1, scores[:, 1], other, np.arange(300)) == pytest.approx(
        delong_paired(y == 1, scores[:, 1], other), abs=1e-12)


def test_youden_ties_go_to_the_lowest_threshold():
    from benchmark.stats import youden_threshold

    # thresholds 0.3 and 0.7 both give sensitivity + specificity = 5/3
    y = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9])
    assert youden_threshold(y, scores) == 0.3


def test_holm_adjusts_step_down_and_keeps_order():
    from benchmark.stats import holm

    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    adjusted = holm(p)
    # m = 4: 0.01 * 4, max(0.03 * 3, 0.04), max(0.04 * 2, 0.09), max(0.2, 0.09)
    np.testing.assert_allclose(adjusted, [0.04, 0.09, np.nan, 0.09, 0.2])
    assert np.all(adjusted[~np.isnan(p)] >= p[~np.isnan(p)])


def test_specificity_threshold_is_the_most_sensitive_point_keeping_it():
    from benchmark.stats import specificity_threshold

    y = np.array([0] * 10 + [1] * 4)
    scores = np.concatenate([np.arange(10) / 10, [0.35, 0.85, 0.95, 0.99]])
    # negatives at 0.0 .. 0.9: below 0.85 are 9 of 10 (specificity 0.9), below 0.8 only 8
    assert specificity_threshold(y, scores, 0.9) == 0.85
    assert specificity_threshold(y, scores, 1.0) == 0.95  # above every negative
    assert np.isnan(specificity_threshold(np.zeros(5), np.arange(5.0), 0.9))


def test_delong_contrast_of_replicates_is_the_mean_difference_and_its_own_test():
    """A contrast over replicates (mean of a's two scorers minus b's) has the mean AUC
    difference as its estimate and the variance w' cov w of the scorers' AUCs: it equals
    the paired test when the replicates are identical, and its covariance is the one the
    pairwise tests imply."""
    from benchmark.stats import delong_contrast, delong_paired

    y, scores = _data(n=400, k=2, seed=12)
    rng = np.random.default_rng(4)
    a1, a2 = scores[:, 1] + rng.normal(0, 0.3, 400), scores[:, 1] + rng.normal(0, 0.3, 400)
    b = scores[:, 1] + rng.normal(0, 0.6, 400)
    weights = np.array([0.5, 0.5, -1.0])
    contrast, p = delong_contrast(y == 1, np.stack([a1, a2, b]), weights)
    aucs = [roc_auc_score(y, s) for s in (a1, a2, b)]
    assert contrast == pytest.approx(0.5 * aucs[0] + 0.5 * aucs[1] - aucs[2], abs=1e-12)
    assert delong_contrast(y == 1, np.stack([a1, a1, b]), weights) == pytest.approx(
        delong_paired(y == 1, a1, b), abs=1e-12)
    # var(a1 - b), var(a2 - b), var(a1 - a2) determine var((a1 + a2)/2 - b) through the covariance
    from scipy.stats import norm

    def var(pair_delta, pair_p):
        return (pair_delta / norm.isf(pair_p / 2)) ** 2

    v1, v2 = var(*delong_paired(y == 1, a1, b)), var(*delong_paired(y == 1, a2, b))
    v12 = var(*delong_paired(y == 1, a1, a2))
    expected_variance = 0.5 * v1 + 0.5 * v2 - 0.25 * v12  # |(a1+a2)/2 - b|^2 expanded
    assert (contrast / norm.isf(p / 2)) ** 2 == pytest.approx(expected_variance, rel=1e-6)


def test_method_level_test_with_one_seed_is_the_bootstrap_and_widens_with_disagreeing_seeds():
    from benchmark.stats import Replicates, method_level_test

    rng = np.random.default_rng(5)
    boot = rng.normal(0.7, 0.02, (1, 500))
    one = Replicates(np.array([0.7]), boot, np.array([0]), np.array([0]))
    result = method_level_test([(1.0, one)], 0.95)
    assert (result.ci_low, result.ci_high) == percentile_ci(boot[0], 0.95) and result.df_seeds == 0
    # two seeds 0.1 apart on the same test set: the seed part dominates, on 1 degree of freedom
    shared = rng.normal(0, 0.02, 500)
    two = Replicates(np.array([0.65, 0.75]), np.stack([0.65 + shared, 0.75 + shared]), np.array([0, 1]),
                     np.array([0, 0]))
    wide = method_level_test([(1.0, two)], 0.95)
    assert wide.variance_seeds == pytest.approx(np.var([0.65, 0.75], ddof=1) / 2)  # no seed-specific noise
    assert wide.variance_patients == pytest.approx(np.var(shared, ddof=1), rel=1e-6)
    assert wide.df_seeds == 1 and wide.ci_high - wide.ci_low > 7 * (0.75 - 0.65)
    # the interval lies between the normal one and Student's t on 1 df
    from scipy.stats import norm, t

    se = np.sqrt(wide.variance_seeds + wide.variance_patients)
    assert 2 * norm.ppf(0.975) * se < wide.ci_high - wide.ci_low < 2 * t.ppf(0.975, 1) * se
    # and the p-value is the one its interval implies: 0 is on the interval's edge at p = 0.05
    shifted = Replicates(two.full_r - wide.ci_low, two.boot_rb - wide.ci_low, two.seed_r, two.draw_r)
    assert method_level_test([(1.0, shifted)], 0.95).p_value == pytest.approx(0.05, abs=1e-6)


def test_method_level_test_gives_each_term_its_own_degrees_of_freedom_when_seed_counts_differ():
    """Two seeds that disagree against four that agree (an untrained control given more
    seeds): the seed part is the two seeds' almost alone, so the test has about 1 degree of
    freedom (Welch-Satterthwaite), not the 1 + 3 that pooling would lend it."""
    from scipy.stats import chi2

    from benchmark.stats import DF_QUANTILE, Replicates, method_level_test

    rng = np.random.default_rng(6)
    shared = rng.normal(0, 0.01, 500)

    def replicates(values):
        values = np.asarray(values)
        return Replicates(values, values[:, None] + shared, np.arange(len(values)), np.zeros(len(values), int))

    few, many = replicates([0.60, 0.80]), replicates([0.70, 0.701, 0.699, 0.7005])
    gain = method_level_test([(1.0, few), (-1.0, many)], 0.95)
    parts = [(np.var([0.60, 0.80], ddof=1) / 2, 1), (np.var(many.full_r, ddof=1) / 4, 3)]
    bounded = [v * df / chi2.ppf(DF_QUANTILE, df) for v, df in parts]
    welch = (gain.variance_patients + sum(bounded)) ** 2 / sum(b**2 / df for b, (_, df) in zip(bounded, parts))
    assert gain.df_seeds == 4 and gain.variance_seeds == pytest.approx(sum(v for v, _ in parts))
    assert gain.df == pytest.approx(welch) and gain.df < 1.1
    # with equal counts the parts are pooled, on the sum of their degrees of freedom
    pair = method_level_test([(1.0, few), (-1.0, replicates([0.70, 0.701]))], 0.95)
    pooled = pair.variance_seeds * 2 / chi2.ppf(DF_QUANTILE, 2)
    assert pair.df == pytest.approx((pair.variance_patients + pooled) ** 2 / (pooled**2 / 2))
