"""k-nearest-neighbour classification on frozen backbone features (the weighted k-NN of
Wu et al. 2018, as DINO evaluates self-supervised features): each image votes with its
``k`` most cosine-similar training images of the (fraction, draw) subset, each vote
weighted by exp(similarity / temperature); a class's score is its share of the votes.
Nothing is fitted or chosen on validation; validation images are scored so that the
thresholds of sensitivity and specificity are set there, as for every protocol.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.evaluate.inputs import label_cells, load_features, read_features, task_records
from benchmark.evaluate.predictions import write_predictions


def knn_scores(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, n_classes: int, k: int,
               temperature: float) -> np.ndarray:
    """(n_eval, n_classes) class scores, each row summing to 1."""
    unit_train = x_train / np.maximum(np.linalg.norm(x_train, axis=1, keepdims=True), 1e-12)
    unit_eval = x_eval / np.maximum(np.linalg.norm(x_eval, axis=1, keepdims=True), 1e-12)
    similarity_nt = unit_eval @ unit_train.T
    k = min(k, len(x_train))
    nearest_nk = np.argpartition(-similarity_nt, k - 1, axis=1)[:, :k]
    weights_nk = np.exp(np.take_along_axis(similarity_nt, nearest_nk, axis=1) / temperature)
    votes_nc = np.zeros((len(x_eval), n_classes))
    np.add.at(votes_nc, (np.arange(len(x_eval))[:, None], y_train[nearest_nk]), weights_nk)
    return votes_nc / votes_nc.sum(axis=1, keepdims=True)


def run(config: dict, job) -> None:
    """Predictions per (fraction, draw) of ``job.task`` (a ``benchmark.evaluate.run.ProtocolJob``)."""
    settings = config["knn"]
    task, records = task_records(job.manifest, job.split, ("train", "val", "test"), job.task)
    features = read_features(job.source)
    test = records[records["split"] == "test"]
    for cell, out in zip(label_cells(config, records, job.split, job.fractions), job.outs):
        evaluated = pd.concat([cell.val, test])
        scores = knn_scores(load_features(features, cell.train)[0], cell.train["label"].to_numpy(),
                            load_features(features, evaluated)[0], task.n_classes, settings["k"],
                            settings["temperature"])
        write_predictions(Path(out), evaluated, scores, task=task, protocol="knn", fraction=cell.fraction,
                          model=job.model, seed=job.seed, draw=cell.draw)
        print(f"knn {job.model} {task.key} @ {cell.fraction:g} draw {cell.draw}: {len(cell.train)} training images")
