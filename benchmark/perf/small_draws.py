"""Does balancing a small label fraction by a column (``split.balance_by``) make its probes
less of a lottery? For one task of a finished run, many random draws of the training
patients at a fraction, drawn as the split draws them: per stratum ("plain"), or per
(stratum, balance value) ("balanced"). Each draw trains the fixed-C probe (C = 1, the
``linear_probe_fixed_c`` protocol) on each model's seed-0 features and scores the test
split's images. Prints, per model and scheme, the mean test AUC over draws, its spread, and
the share of draws below 0.47, and the balanced scheme's mean against the plain one's.

    python -m benchmark.perf.small_draws [--results results] [--dataset rsna] [--task cancer]
        [--balance site_id] [--fraction 0.01] [--draws 60] [--models clip_untrained mama ...]

docs/reading-the-table.md ("Below chance is not a flipped label") has the figures that
chose ``split.balance_by: {rsna: site_id}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmark.data.split import fraction_count, patient_balance, patient_strata, read_split
from benchmark.data.tables import read_manifest
from benchmark.evaluate.predictions import label_indices
from benchmark.evaluate.probe import fit_probe_grid, predict_probe
from benchmark.stats import macro_auc
from benchmark.tasks import get_task

MODELS = ["clip_untrained", "mgca_untrained", "image_statistics", "clip", "glam", "mama"]


def draw_patients(groups: pd.Series, fraction: float, rng: np.random.Generator) -> set:
    """``fraction_count`` patients of every group, as the split draws them."""
    chosen = set()
    for _, members in groups.groupby(groups, sort=True):
        order = members.index.to_numpy()[rng.permutation(len(members))]
        chosen |= set(order[:fraction_count(fraction, len(order))])
    return chosen


def draw_aucs(features: np.ndarray, labels: np.ndarray, patients: np.ndarray, test: np.ndarray,
              groups: pd.Series, fraction: float, draws: int, n_classes: int) -> np.ndarray:
    """Test AUC of the fixed-C probe for ``draws`` random draws (seeded 0..draws-1)."""
    aucs = []
    for draw in range(draws):
        train = np.isin(patients, list(draw_patients(groups, fraction, np.random.default_rng([draw]))))
        # one C, so nothing is chosen: the training images stand in for the unused validation set
        scaler, fits = fit_probe_grid(features[train], labels[train], features[train], labels[train],
                                      n_classes, [1.0], 2000, 0)
        aucs.append(macro_auc(labels[test], predict_probe(scaler, fits[0]["clf"], features[test], n_classes)))
    return np.array(aucs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--dataset", default="rsna")
    parser.add_argument("--task", default="cancer")
    parser.add_argument("--balance", default="site_id")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--draws", type=int, default=60)
    parser.add_argument("--models", nargs="+", default=MODELS)
    args = parser.parse_args()

    config = yaml.safe_load((args.results / "config.effective.yaml").read_text())
    task = get_task(args.dataset, args.task)
    manifest = read_manifest(args.results / "cache" / args.dataset / "manifest.csv")
    split = read_split(args.results / "splits" / f"{args.dataset}.csv").set_index("patient_id")
    stratify = config["split"]["stratify"].get(args.dataset) or task.column
    training = split.index[split["split"] == "train"]
    strata = patient_strata(manifest, stratify).loc[training].astype(str)
    schemes = {"plain": strata, "balanced": strata + "/" + patient_balance(manifest, args.balance).loc[training]}
    print(f"{args.dataset}/{args.task}, fraction {args.fraction:g}, {args.draws} draws per scheme; patients per draw: "
          + ", ".join(f"{name} {schemes[name].nunique()}+" for name in schemes))
    print(f"{'model':<20} {'plain AUC (sd, <0.47)':>26} {'balanced AUC (sd, <0.47)':>28} {'ratio':>6}")
    by_image = manifest.set_index("image_id")
    for model in args.models:
        stored = np.load(args.results / "features" / model / "seed0" / f"{args.dataset}.npz")
        rows = by_image.loc[stored["image_id"].astype(str)]
        labels = label_indices(rows, task)
        keep = labels.notna().to_numpy()
        patients = rows["patient_id"].to_numpy()[keep]
        test = (split["split"].reindex(patients) == "test").to_numpy()
        results = {name: draw_aucs(stored["features"][keep], labels[keep].astype(int).to_numpy(), patients, test,
                                   groups, args.fraction, args.draws, task.n_classes)
                   for name, groups in schemes.items()}
        cells = [f"{a.mean():.3f} ({a.std():.3f}, {(a < 0.47).mean():4.0%})" for a in results.values()]
        print(f"{model:<20} {cells[0]:>26} {cells[1]:>28} {results['balanced'].mean() / results['plain'].mean():6.3f}")


if __name__ == "__main__":
    main()
