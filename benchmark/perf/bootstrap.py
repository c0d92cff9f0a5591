"""The patient bootstrap against a naive loop, on the same data, in one run.

    python -m benchmark.perf.bootstrap [--images 100000] [--classes 7] [--boot 2000]

Data: ``--images`` predictions over ``--classes`` classes, four images per patient.
*Project*: ``resample_matrix`` + ``clustered_bacc`` + ``clustered_auc`` for all resamples.
*Naive*: per resample, expand the drawn patients to image indices and call scikit-learn's
``balanced_accuracy_score`` and ``roc_auc_score`` (one-vs-rest macro); it is timed on
``--naive-boot`` resamples and reported per resample, since 2000 of them take minutes.
The targets are under 5 s for the project and at least 50x the naive rate. The script
also checks that both give the same values on the resamples they share.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from benchmark.stats import clustered_auc, clustered_bacc, patient_strata, resample_matrix


def make_data(n_images: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    patient_n = np.arange(n_images) // 4
    y_n = rng.integers(0, n_classes, n_images)
    logits = rng.normal(size=(n_images, n_classes)) + np.eye(n_classes)[y_n]
    scores = np.exp(logits)
    return y_n, scores / scores.sum(axis=1, keepdims=True), patient_n


def naive(y_n, scores_nk, patient_n, counts_bp) -> tuple[np.ndarray, np.ndarray]:
    members = [np.flatnonzero(patient_n == p) for p in range(counts_bp.shape[1])]
    bacc, auc = [], []
    for counts_p in counts_bp:
        index = np.concatenate([np.tile(members[p], int(c)) for p, c in enumerate(counts_p) if c])
        y, s = y_n[index], scores_nk[index]
        bacc.append(balanced_accuracy_score(y, s.argmax(axis=1)))
        auc.append(roc_auc_score(y, s[:, 1]) if s.shape[1] == 2 else roc_auc_score(y, s, multi_class="ovr"))
    return np.array(bacc), np.array(auc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=7)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--naive-boot", type=int, default=10)
    args = parser.parse_args(argv)

    y_n, scores_nk, patient_n = make_data(args.images, args.classes)
    n_patients = patient_n.max() + 1
    start = time.perf_counter()
    strata = patient_strata(y_n, patient_n, n_patients)
    counts_bp = resample_matrix(strata, args.boot, np.random.default_rng(0))
    bacc_b = clustered_bacc(y_n, scores_nk, counts_bp, patient_n)
    auc_b = clustered_auc(y_n, scores_nk, counts_bp, patient_n)
    project = time.perf_counter() - start

    start = time.perf_counter()
    naive_bacc, naive_auc = naive(y_n, scores_nk, patient_n, counts_bp[:args.naive_boot])
    naive_per_resample = (time.perf_counter() - start) / args.naive_boot
    same = (np.allclose(naive_bacc, bacc_b[:args.naive_boot], atol=1e-10)
            and np.allclose(naive_auc, auc_b[:args.naive_boot], atol=1e-10))
    speedup = naive_per_resample * args.boot / project
    print(f"bootstrap: {args.images} predictions x {args.classes} classes, {n_patients} patients, "
          f"{args.boot} resamples, bacc + auc")
    print(f"  project  {project:8.2f} s            (target < 5 s)")
    print(f"  naive    {naive_per_resample * args.boot:8.1f} s (estimated from {args.naive_boot} resamples)")
    print(f"  speed-up {speedup:8.1f}x            (target >= 50x); same values: {same}")


if __name__ == "__main__":
    main()
