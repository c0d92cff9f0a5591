"""What the wider linear-probe C grid costs: the earlier default grid (1e-3 .. 10, five
values) against the current default (1e-4 .. 1e4, nine) and the paper grid (1e-6 .. 1e6,
thirteen), on the same features, in one run.

    python -m benchmark.perf.probe [--train 1000] [--val 200] [--dim 192] [--classes 4]

Features: Gaussian classes in ``--dim`` dimensions around shared centres, like the tiny
presets' backbone features. Each grid is swept by ``fit_probe`` as the project runs it
(one fit per C, from scratch). It prints seconds per sweep and the ratio to the earlier
grid, and the C each grid chooses with its validation AUC. It also times a warm-started
path over the paper grid and says whether its validation AUCs equal the cold fits' (they
do not at weak regularisation, which is why the project fits every C from scratch).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import yaml
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from benchmark.config import REPO_ROOT
from benchmark.evaluate.probe import fit_probe

EARLIER_GRID = [0.001, 0.01, 0.1, 1.0, 10.0]


def make_features(n: int, dim: int, n_classes: int, seed: int):
    """Gaussian classes around the same centres for every call, a fresh sample per ``seed``."""
    centres = np.random.default_rng(12345).normal(size=(n_classes, dim)) * 0.15
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    return centres[y] + rng.normal(size=(n, dim)), y


def warm_path_aucs(x_train, y_train, x_val, y_val, grid):
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=0, warm_start=True)
    aucs = []
    for C in sorted(grid):
        clf.set_params(C=C)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(scaler.transform(x_train), y_train)
        aucs.append(roc_auc_score(y_val, clf.predict_proba(scaler.transform(x_val)), multi_class="ovr"))
    return np.array(aucs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--classes", type=int, default=4)
    args = parser.parse_args()
    x_train, y_train = make_features(args.train, args.dim, args.classes, 0)
    x_val, y_val = make_features(args.val, args.dim, args.classes, 1)
    grids = {"earlier": EARLIER_GRID}
    for name, file in (("default", "config.yaml"), ("paper", "paper.yaml")):
        grids[name] = yaml.safe_load((REPO_ROOT / f"config/{file}").read_text())["linear_probe"]["C"]
    print(f"{'grid':8s} {'values':>6s} {'seconds':>8s} {'x earlier':>9s}  chosen C, validation AUC")
    base, cold_aucs = None, None
    for name, grid in grids.items():
        start = time.perf_counter()
        _, _, chosen, sweep = fit_probe(x_train, y_train, x_val, y_val, args.classes, grid, 2000, 0)
        seconds = time.perf_counter() - start
        base = base or seconds
        best = max(r["val_auc"] for r in sweep)
        print(f"{name:8s} {len(grid):6d} {seconds:8.2f} {seconds / base:9.1f}  {chosen:g}, {best:.4f}")
        cold_aucs = np.array([r["val_auc"] for r in sweep])
    start = time.perf_counter()
    warm = warm_path_aucs(x_train, y_train, x_val, y_val, grids["paper"])
    print(f"warm-started path over the paper grid: {time.perf_counter() - start:.2f} s; validation AUCs equal to "
          f"the cold fits' within 1e-4: {bool(np.allclose(warm, cold_aucs, atol=1e-4))}")


if __name__ == "__main__":
    main()
