"""Does a method-level p-value hold its level? Null data sets through the table's own code.

Each simulated data set is one RSNA-like binary task scored by two methods, the reference
and a challenger, each trained with ``n_seeds`` pretraining seeds. A seed's true AUC is
the method's AUC plus a seed effect (normal, standard deviation ``seed_sd`` in AUC units);
its scores are the binormal model of that AUC on the same test patients: score = d y +
u + m + v, with u shared by every method and seed (how hard an image is, partly per
patient), m shared by the seeds of one method (the errors a method makes whatever its
seed) and v drawn afresh for each seed (the errors a checkpoint makes on its own).
Under the null (``delta`` 0) both methods have the same AUC, so a test at 0.05 should
reject the challenger-minus-reference difference in 5 % of data sets.

``python -m benchmark.calibration`` prints the size of the degrees-of-freedom rule in the test's own
model, then the rejection rates of ``method_p_value`` (and,
for comparison, of the conditional ``p_value``) for 2, 3 and 5 seeds and seed effects of
0 to 0.10 AUC, with a power row, and for unequal seed counts (``UNEQUAL``: a reference
with more seeds than the challenger, as an untrained control given seeds of its own);
``tests/test_calibration.py`` checks a smaller run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

BASE_AUC = 0.75  # a method's AUC without seed effect: the middle of the range the benchmark sees
SHARED_NOISE = 0.4  # share of a score's noise variance common to every method and seed (u above)
METHOD_NOISE = 0.3  # share common to the seeds of one method (m above); the rest is the seed's own (v)
PATIENT_SHARE = 0.5  # share of u and of m shared by a patient's two views


@dataclass(frozen=True)
class Scenario:
    n_seeds: int
    seed_sd: float  # standard deviation of a seed's AUC around its method's
    delta: float = 0.0  # challenger AUC minus reference AUC (0: the null)
    n_patients: int = 150
    prevalence: float = 0.3
    ref_seeds: int | None = None  # the reference's own seed count and seed sd (None: as the challenger's),
    ref_seed_sd: float | None = None  # e.g. an untrained control given more seeds than its method

    def seeds_and_sd(self, model: str) -> tuple[int, float]:
        if model == "ref":
            return (self.n_seeds if self.ref_seeds is None else self.ref_seeds,
                    self.seed_sd if self.ref_seed_sd is None else self.ref_seed_sd)
        return self.n_seeds, self.seed_sd


def simulated_predictions(scenario: Scenario, rng: np.random.Generator) -> pd.DataFrame:
    """Test-split predictions of the reference (``ref``) and the challenger (``other``) for
    every seed, in the predictions file's columns (two views per patient)."""
    n = scenario.n_patients
    patient_n = np.repeat(np.arange(n), 2)
    label_n = np.repeat((rng.random(n) < scenario.prevalence).astype(int), 2)

    def persistent(share: float) -> np.ndarray:  # per image, partly per patient
        return (rng.normal(0, np.sqrt(share * PATIENT_SHARE), n)[patient_n]
                + rng.normal(0, np.sqrt(share * (1 - PATIENT_SHARE)), 2 * n))

    shared_n = persistent(SHARED_NOISE)
    frames = []
    for model, auc in (("ref", BASE_AUC), ("other", BASE_AUC + scenario.delta)):
        method_n = persistent(METHOD_NOISE)
        n_seeds, seed_sd = scenario.seeds_and_sd(model)
        for seed in range(n_seeds):
            seed_auc = np.clip(auc + seed_sd * rng.standard_normal(), 0.51, 0.99)
            separation = np.sqrt(2) * norm.ppf(seed_auc)  # binormal: AUC = Phi(d / sqrt(2)), noise variance 1
            own_n = rng.normal(0, np.sqrt(1 - SHARED_NOISE - METHOD_NOISE), 2 * n)
            score_n = 1 / (1 + np.exp(-(separation * label_n + shared_n + method_n + own_n)))
            frames.append(pd.DataFrame({
                "dataset": "rsna", "task": "cancer", "protocol": "linear_probe", "fraction": "1", "model": model,
                "seed": seed, "draw": 0, "image_id": [f"i{i}" for i in range(2 * n)],
                "patient_id": [f"p{p}" for p in patient_n], "breast_id": [f"p{p}_L" for p in patient_n],
                "split": "test", "label": label_n, "score_0": 1 - score_n, "score_1": score_n}))
    return pd.concat(frames, ignore_index=True)


def rejection_rates(scenario: Scenario, n_sets: int, n_boot: int = 200, alpha: float = 0.05,
                    seed: int = 0) -> dict[str, float]:
    """Share of ``n_sets`` simulated data sets whose challenger row rejects at ``alpha``, for
    the method-level and the conditional p-value, through ``tables.table_from_predictions``."""
    from benchmark.tables import table_from_predictions

    # the reference's own seeds enter the seed only where set, so the equal-count scenarios
    # keep the random streams (and the rates in docs/protocol.md) they had before
    own = [scenario.ref_seeds or 0, int(round((scenario.ref_seed_sd or 0) * 1000))] if (
        scenario.ref_seeds, scenario.ref_seed_sd) != (None, None) else []
    rng = np.random.default_rng([seed, scenario.n_seeds, int(round(scenario.seed_sd * 1000)),
                                 int(round(scenario.delta * 1000)), *own])
    method, conditional = [], []
    for k in range(n_sets):
        table = table_from_predictions(simulated_predictions(scenario, rng), n_boot, k, 0.95, "ref",
                                       metrics=["auc"])
        row = table[table["model"] == "other"].iloc[0]
        method.append(row["method_p_value"] < alpha)
        conditional.append(row["p_value"] < alpha)
    return {"method_p_value": float(np.mean(method)), "p_value": float(np.mean(conditional))}


def degrees_of_freedom_size(share: float, nu: int, quantile: float | None, n: int = 200_000,
                            seed: int = 0) -> float:
    """Rejection rate at 0.05 of t = estimate / sqrt(variance) in the method-level test's own
    model: a normal estimate whose variance is a known part (1 - ``share``) plus a part on
    ``nu`` degrees of freedom (``share`` x chi^2_nu / nu), Satterthwaite's degrees of freedom
    computed with that part at its upper bound nu s^2 / chi^2_{nu, quantile} (None: as it is)."""
    from scipy.stats import chi2
    from scipy.stats import t as student_t

    rng = np.random.default_rng([seed, nu, int(share * 1000)])
    estimate, part = rng.standard_normal(n), share * rng.chisquare(nu, n) / nu
    bounded = part if quantile is None else part * nu / chi2.ppf(quantile, nu)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(bounded > 0, (1 - share + bounded) ** 2 / (bounded**2 / nu), np.inf)
    return float(np.mean(2 * student_t.sf(np.abs(estimate) / np.sqrt(1 - share + part), df) < 0.05))


# the seed part held by the model with fewer seeds, by the one with more, or by both
UNEQUAL = [Scenario(2, 0.05, ref_seeds=4, ref_seed_sd=0.0), Scenario(2, 0.10, ref_seeds=4, ref_seed_sd=0.0),
           Scenario(2, 0.10, ref_seeds=5, ref_seed_sd=0.02), Scenario(2, 0.0, ref_seeds=4, ref_seed_sd=0.05),
           Scenario(2, 0.02, ref_seeds=4, ref_seed_sd=0.10), Scenario(2, 0.05, ref_seeds=4, ref_seed_sd=0.05),
           Scenario(2, 0.05, ref_seeds=3, ref_seed_sd=0.05), Scenario(3, 0.10, ref_seeds=5, ref_seed_sd=0.0),
           Scenario(2, 0.0, ref_seeds=4, ref_seed_sd=0.0)]


def binomial_band(rate: float, n: int, z: float = 2.576) -> tuple[float, float]:
    """The interval a rejection rate of ``n`` data sets stays in (99 % by default) when the true rate is ``rate``."""
    half = z * np.sqrt(rate * (1 - rate) / n)
    return rate - half, rate + half


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=400, help="simulated data sets per scenario")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--df-only", action="store_true", help="only the degrees-of-freedom table (seconds)")
    args = parser.parse_args(argv)
    from benchmark.stats import DF_QUANTILE

    shares = (0.0, 0.2, 0.5, 0.7, 0.85, 0.95, 1.0)
    print("rejection rate at 0.05 when a share of the variance is estimated on nu degrees of freedom")
    print("nu  rule                  " + "  ".join(f"{s:5.2f}" for s in shares))
    for nu in (1, 2, 4, 8):
        for name, quantile in (("Satterthwaite", None), (f"bounded ({DF_QUANTILE:g})", DF_QUANTILE)):
            rates = [degrees_of_freedom_size(share, nu, quantile) for share in shares]
            print(f"{nu:2d}  {name:20s}  " + "  ".join(f"{r:5.3f}" for r in rates), flush=True)
    if args.df_only:
        return
    lo, hi = binomial_band(0.05, args.sets)
    print(f"rejection rate at 0.05 over {args.sets} data sets per row (99 % band under calibration: "
          f"{lo:.3f} to {hi:.3f})")
    print("seeds  seed_sd  delta  method_p_value  p_value (conditional)")
    for delta in (0.0, 0.05):
        for n_seeds in (2, 3, 5):
            for seed_sd in (0.0, 0.02, 0.05, 0.10):
                if delta and seed_sd not in (0.02, 0.05):
                    continue
                rates = rejection_rates(Scenario(n_seeds, seed_sd, delta), args.sets, args.n_boot)
                print(f"{n_seeds:5d}  {seed_sd:7.2f}  {delta:5.2f}  {rates['method_p_value']:14.3f}  "
                      f"{rates['p_value']:7.3f}", flush=True)
    print("unequal seed counts (a model against a reference given more seeds, e.g. its untrained control), null")
    print("seeds  seed_sd  ref_seeds  ref_seed_sd  method_p_value")
    for scenario in UNEQUAL:
        rates = rejection_rates(scenario, args.sets, args.n_boot)
        print(f"{scenario.n_seeds:5d}  {scenario.seed_sd:7.2f}  {scenario.ref_seeds:9d}  {scenario.ref_seed_sd:11.2f}  "
              f"{rates['method_p_value']:14.3f}", flush=True)


if __name__ == "__main__":
    main()
