"""What every evaluation reads: a task's labelled records of some splits, and the
features saved by the ``features`` step, in the records' order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.split import (
    fraction_draws,
    fraction_patients,
    read_split,
    split_records,
    validation_patients,
)
from benchmark.data.tables import read_manifest
from benchmark.errors import BenchmarkError
from benchmark.evaluate.predictions import labelled
from benchmark.tasks import Task, get_task


def task_records(manifest: Path, split: Path, splits: tuple[str, ...], task_key: str) -> tuple[Task, pd.DataFrame]:
    """The task, and the records of ``splits`` that have a label for it (``label`` = class index)."""
    task = get_task(*task_key.split("/"))
    return task, labelled(split_records(read_manifest(manifest), read_split(split), splits), task)


def read_features(path: Path) -> dict[str, np.ndarray]:
    """The ``features`` step's file: image ids, backbone features and joint embeddings."""
    if not Path(path).is_file():
        raise BenchmarkError(f"{path}: features file not found (the features step writes it)")
    try:
        data = np.load(path)
        return {key: data[key] for key in ("image_id", "features", "embeddings")}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise BenchmarkError(f"{path}: not a features file ({str(exc).splitlines()[0][:120]})") from None


def load_features(path: Path | dict, records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(backbone features, joint embeddings) of ``records``, in their order; ``path`` may be
    a file or what ``read_features`` returned for it (read once, selected many times)."""
    data = path if isinstance(path, dict) else read_features(path)
    index = {image_id: i for i, image_id in enumerate(data["image_id"])}
    missing = [i for i in records["image_id"] if i not in index]
    if missing:
        raise BenchmarkError(f"{path if not isinstance(path, dict) else 'features'}: no features for "
                             f"{len(missing)} image(s), e.g. {missing[0]}")
    rows = [index[i] for i in records["image_id"]]
    return data["features"][rows], data["embeddings"][rows]


@dataclass(frozen=True)
class LabelCell:
    """One (label fraction, patient draw) of a task: its training and validation records."""

    fraction: float
    draw: int
    train: pd.DataFrame
    val: pd.DataFrame


def label_cells(config: dict, records: pd.DataFrame, split: Path, fractions: list[float]) -> list[LabelCell]:
    """Every (fraction, draw) in the commands' order (fraction-major): the fraction's training
    patients, and the validation patients that choose C, the early stop and thresholds (the
    scaled subset, or all of them with ``split.validation: full``)."""
    table = read_split(split)
    scaled = config["split"]["validation"] == "scaled"
    cells = []
    for fraction in fractions:
        for draw in fraction_draws(fraction, config["split"]["draws"]):
            train = records[(records["split"] == "train")
                            & records["patient_id"].isin(fraction_patients(table, fraction, draw, split))]
            val = records[(records["split"] == "val")
                          & records["patient_id"].isin(validation_patients(table, fraction, draw, scaled, split))]
            cells.append(LabelCell(fraction, draw, train, val))
    return cells
