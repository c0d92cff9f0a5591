"""Per-image predictions, the unit of record: every table number is recomputed from them.

Columns: dataset, task, protocol, fraction, model, seed, draw, image_id, patient_id,
breast_id, split, label (class index), score_0 .. score_{K-1} (probabilities). ``seed``
is the pretraining seed; ``draw`` numbers the patient draws of a label fraction (0 for
zero-shot and the full training set).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.tables import read_csv
from benchmark.errors import BenchmarkError
from benchmark.tasks import Task, get_task

ID_COLUMNS = ["dataset", "task", "protocol", "fraction", "model", "seed", "draw"]


def label_indices(records: pd.DataFrame, task: Task) -> pd.Series:
    """Class index per record, NaN where the record has no label for this task."""
    raw = pd.to_numeric(records[task.column], errors="coerce")
    lookup = {float(c): i for i, c in enumerate(task.classes)}
    return raw.map(lookup)


def labelled(records: pd.DataFrame, task: Task) -> pd.DataFrame:
    out = records.assign(label=label_indices(records, task))
    return out[out["label"].notna()].assign(label=lambda d: d["label"].astype(int))


def write_predictions(path: Path, records: pd.DataFrame, scores: np.ndarray, *, task: Task, protocol: str,
                      fraction: float | None, model: str, seed: int, draw: int = 0) -> pd.DataFrame:
    scores = np.asarray(scores, dtype=np.float64)
    table = pd.DataFrame({
        "dataset": task.dataset, "task": task.name, "protocol": protocol,
        "fraction": "" if fraction is None else f"{fraction:g}", "model": model, "seed": seed, "draw": draw,
        "image_id": records["image_id"].to_numpy(), "patient_id": records["patient_id"].to_numpy(),
        "breast_id": records["breast_id"].to_numpy(), "split": records["split"].to_numpy(),
        "label": records["label"].to_numpy(),
    })
    for k, column in enumerate(score_columns(task.n_classes)):
        table[column] = np.round(scores[:, k], 8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions file, checked: one task, a known one, its score columns numeric, each
    label a class index; anything else is one line naming the file and row."""
    frame = read_csv(path, "predictions file", ID_COLUMNS[:-1] + ["image_id", "patient_id", "breast_id", "split",
                                                                  "label"],
                     dtype={"image_id": str, "patient_id": str, "breast_id": str, "fraction": str},
                     keep_default_na=False, unique="image_id")
    if frame.empty:
        raise BenchmarkError(f"{path}: predictions file has no rows")
    keys = frame[["dataset", "task"]].astype(str).drop_duplicates()
    if len(keys) > 1:
        raise BenchmarkError(f"{path}: holds predictions of more than one task ({len(keys)} dataset/task pairs)")
    try:
        task = get_task(str(frame["dataset"].iloc[0]), str(frame["task"].iloc[0]))
    except BenchmarkError as exc:
        raise BenchmarkError(f"{path}: {exc}") from None
    columns = score_columns(task.n_classes)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise BenchmarkError(f"{path}: {task.key} has {task.n_classes} classes, but column(s) {', '.join(missing)} "
                             "are missing")
    scores = frame[columns].apply(pd.to_numeric, errors="coerce")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad_score = scores.isna().any(axis=1).to_numpy()
    bad_label = ~labels.isin(range(task.n_classes)).to_numpy()
    for bad, what in ((bad_score, "missing or non-numeric score"),
                      (bad_label, f"label is not a class index 0..{task.n_classes - 1}")):
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BenchmarkError(f"{path}: row {row + 2} (image {frame['image_id'].iloc[row]}): {what} "
                                 f"({int(bad.sum())} row(s) in all)")
    frame[columns] = scores
    frame["label"] = labels.astype(int)
    return frame if "draw" in frame.columns else frame.assign(draw=0)


def score_columns(n_classes: int) -> list[str]:
    return [f"score_{k}" for k in range(n_classes)]


def score_matrix(predictions: pd.DataFrame, n_classes: int) -> np.ndarray:
    """(N, K) scores; a NaN score is bad input, never silently argmax'ed."""
    scores = predictions[score_columns(n_classes)].to_numpy(dtype=np.float64)
    if np.isnan(scores).any():
        bad = predictions.loc[np.isnan(scores).any(axis=1), "image_id"].iloc[0]
        raise ValueError(f"NaN score for image {bad}")
    return scores
