"""The dataset registry, in the style of the model registry: one module per dataset in
this package, each registering a ``Dataset`` (its loader, tasks, synthetic writer and
title). The command line's choices, ``check-data``, ``preprocess``, ``synth``, the task
list and the figure titles read it. docs/extending.md adds one.

Loaders and writers are imported when called, so reading the registry (the config check,
the workflow's parse) stays light.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmark.registry import Registry
from benchmark.tasks import Task


@dataclass(frozen=True)
class Dataset:
    name: str  # data.<name> in the config and the `dataset` column everywhere
    title: str  # figure and table titles
    tasks: tuple[Task, ...]  # its downstream tasks (their keys are <name>/<task>)
    # (root, config entry) -> (records with the manifest columns, table-level exclusions)
    load: Callable
    main_table: str  # the config key naming the table whose rows are "rows in" for the exclusion count
    # (root, n_patients, seed, shape, workers) -> {"images": n, "patients": n}: synthetic data in the real format
    write_synthetic: Callable | None = None
    # images the synthetic writer makes per patient on average (the disk check's estimate
    # before the data exist; measured on the generator, rows it writes to be excluded included)
    synthetic_images_per_patient: float = 6.0


DATASETS: dict[str, Dataset] = Registry("dataset")
register_dataset = DATASETS.register


for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")


def rows_in(dataset: Dataset, entry: dict) -> int:
    """Rows of the dataset's main table (what the exclusion count starts from)."""
    import pandas as pd

    return len(pd.read_csv(Path(entry["root"]) / entry[dataset.main_table], usecols=[0]))
