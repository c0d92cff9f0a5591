"""Who each method fails: a metric per patient subgroup and its gap to the whole test set
-> ``results/subgroups.csv`` (columns in docs/reading-the-table.md, Subgroups).

For each task, configured cell (protocol, label fraction), model and metric, the test
images are split by an attribute of the manifest (EMBED: race, ethnicity, age band,
manufacturer; RSNA: site, machine, age band; ``subgroups.attributes``). A subgroup's value
uses the same patient bootstrap matrix as table.csv (the same seed, strata and resamples,
so its overall values equal the table's) and the thresholds its cell chose on the whole
validation split (one operating point for everyone, as it would be deployed). The gap is
subgroup minus overall with two paired intervals: conditional on the trained checkpoints
(patients resampled), and method level (pretraining seeds and label draws resampled with
them, as table.csv's ``method_*`` columns). A subgroup with fewer than
``min_patients`` patients, or fewer than ``min_patients_per_class`` patients of some
class of the task, is reported as too small (value NaN, the reason in ``note``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import BenchmarkError
from benchmark.evaluate.predictions import read_predictions
from benchmark.metrics import METRICS
from benchmark.stats import method_level_test, percentile_ci
from benchmark.tables import add_replicates, cell_mask, metric_values, task_cells, task_resamples
from benchmark.tasks import get_task

SUBGROUP_COLUMNS = ["dataset", "task", "protocol", "fraction", "model", "metric", "attribute", "subgroup",
                    "n_images", "n_patients", "value", "ci_low", "ci_high", "overall", "gap", "gap_ci_low",
                    "gap_ci_high", "method_gap_ci_low", "method_gap_ci_high", "n_boot", "n_usable", "note"]
UNKNOWN = "unknown"


def band_names(edges: list[float]) -> list[str]:
    """With edges [50, 60, 70]: "<50", "50-59", "60-69", ">=70"."""
    return [f"<{edges[0]:g}"] + [f"{lo:g}-{hi - 1:g}" for lo, hi in zip(edges, edges[1:])] + [f">={edges[-1]:g}"]


def group_order(group: str, edges: list[float]) -> tuple:
    """Reading order of subgroups: age bands by age, numbers (site, machine) by value, then
    names alphabetically, ``unknown`` last."""
    bands = band_names(edges)
    if group == UNKNOWN:
        return (3, 0.0, "")
    if group in bands:
        return (0, float(bands.index(group)), "")
    try:
        return (1, float(group), "")
    except ValueError:
        return (2, 0.0, group)


def age_bands(age: pd.Series, edges: list[float]) -> pd.Series:
    """Ages to bands (``band_names``); missing or unreadable ages are "unknown"."""
    names = band_names(edges)
    index = np.searchsorted(np.asarray(edges, float), pd.to_numeric(age, errors="coerce").to_numpy(), side="right")
    bands = pd.Series(np.array(names, dtype=object)[np.minimum(index, len(names) - 1)], index=age.index)
    return bands.where(pd.to_numeric(age, errors="coerce").notna(), UNKNOWN)


def attribute_values(records: pd.DataFrame, attribute: str, edges: list[float], where: str) -> pd.Series:
    """One attribute of each image (index: image_id); ``age_band`` is derived from ``age``."""
    column = "age" if attribute == "age_band" else attribute
    if column not in records.columns:
        raise BenchmarkError(f"{where}: subgroup attribute {attribute!r} needs column {column!r}, which the "
                             f"manifest lacks (it has: {', '.join(records.columns)})")
    values = records[column]
    if attribute == "age_band":
        values = age_bands(values, edges)
    text = values.astype("string").str.strip().fillna("")
    return pd.Series(text.where(text != "", UNKNOWN).to_numpy(), index=records["image_id"].astype(str).to_numpy())


def _patients(n: int) -> str:
    return f"{n} patient" + ("" if n == 1 else "s")


def _size_note(labels_n: np.ndarray, patients_n: np.ndarray, n_classes: int, settings: dict) -> str:
    n_patients = len(np.unique(patients_n))
    if n_patients < settings["min_patients"]:
        return f"too small: {_patients(n_patients)} (subgroups.min_patients {settings['min_patients']})"
    per_class = [len(np.unique(patients_n[labels_n == k])) for k in range(n_classes)]
    if min(per_class) < settings["min_patients_per_class"]:
        return (f"too small: {_patients(min(per_class))} of class {int(np.argmin(per_class))} "
                f"(subgroups.min_patients_per_class {settings['min_patients_per_class']})")
    return ""


def _row(cell: tuple, entry: dict | None, overall: dict, level: float, note: str, min_usable: float,
         **counts) -> dict:
    protocol, fraction, model, metric = cell
    whole = float(np.mean(overall["full"]))
    row = dict(protocol=protocol, fraction=fraction, model=model, metric=metric, **counts, overall=whole, note=note)
    if entry is None:
        return row
    value = float(np.mean(entry["full"]))
    boot_b, whole_b = np.mean(entry["boot"], axis=0), np.mean(overall["boot"], axis=0)
    # A resample can leave the subgroup without a class (its value is then undefined): the
    # intervals are conditional on resamples where the subgroup keeps every class.
    usable = np.isfinite(entry["boot"]).all(axis=0)
    row.update(value=value, gap=value - whole, n_usable=int(usable.sum()))
    row["ci_low"], row["ci_high"] = percentile_ci(boot_b, level)
    row["gap_ci_low"], row["gap_ci_high"] = percentile_ci(boot_b - whole_b, level)
    gap = method_level_test([(1.0, entry["reps"].minus(overall["reps"]))], level)
    row["method_gap_ci_low"], row["method_gap_ci_high"] = gap.clipped(-1.0, 1.0)
    if usable.mean() < min_usable:
        row["note"] = (f"{usable.sum()} of {usable.size} resamples usable ({usable.mean():.0%}; below "
                       f"subgroups.min_usable_share {min_usable:g}): the others left the subgroup without a "
                       "class, so the intervals hold for resamples where it keeps every class")
    return row


def task_subgroups(task_frame: pd.DataFrame, validation: pd.DataFrame, records: pd.DataFrame, dataset: str,
                   task_name: str, settings: dict, stats: dict) -> list[dict]:
    """The rows of one task: every configured attribute, subgroup, cell, model and metric."""
    task = get_task(dataset, task_name)
    metrics = [METRICS[name] for name in settings["metrics"] if METRICS[name].applies(task)]
    cells = task_cells(task_frame, dataset, task_name)
    any_cell = next(iter(cells.values()))
    labels = any_cell["label"].to_numpy(int)
    patients, resamples_bp = task_resamples(any_cell, dataset, task_name, stats["seed"], stats["n_boot"])
    val_cells = dict(iter(validation.groupby(["protocol", "fraction", "model", "seed", "draw"], sort=True)))
    patient_pos = {p: i for i, p in enumerate(patients)}
    overall = metric_values(cells, val_cells, task, resamples_bp, patient_pos, metrics)
    add_replicates(overall, cells)
    rows = []
    where = f"subgroups: {dataset}/{task_name}"
    for attribute in settings["attributes"].get(dataset, []):
        groups = attribute_values(records, attribute, settings["age_bands"], where).reindex(any_cell["image_id"])
        groups = groups.fillna(UNKNOWN).to_numpy()
        for group in sorted(set(groups), key=lambda g: group_order(g, settings["age_bands"])):
            mask = groups == group
            note = _size_note(labels[mask], any_cell["patient_id"].to_numpy()[mask], task.n_classes, settings)
            sub = None
            if not note:
                sub_cells = {key: cell[mask].reset_index(drop=True) for key, cell in cells.items()}
                sub = metric_values(sub_cells, val_cells, task, resamples_bp, patient_pos, metrics)
                add_replicates(sub, sub_cells)
            counts = dict(n_images=int(mask.sum()), n_patients=len(np.unique(any_cell["patient_id"].to_numpy()[mask])))
            for cell, whole in sorted(overall.items()):
                entry = None if sub is None else sub.get(cell)
                defined = entry is not None and np.isfinite(np.mean(entry["full"]))
                reason = note or ("" if defined else "undefined in this subgroup (a class is missing in some cell)")
                rows.append(dict(dataset=dataset, task=task_name, attribute=attribute, subgroup=group,
                                 n_boot=stats["n_boot"], **_row(cell, entry, whole, stats["ci"], reason,
                                                                settings["min_usable_share"], **counts)))
    return rows


def build_subgroups(prediction_files: list[Path], manifests: dict[str, Path], settings: dict,
                    stats: dict) -> pd.DataFrame:
    """subgroups.csv from the predictions of the configured cells and each dataset's manifest."""
    from benchmark.data.tables import read_manifest

    predictions = pd.concat([read_predictions(Path(p)) for p in prediction_files], ignore_index=True)
    predictions = predictions[np.logical_or.reduce([cell_mask(predictions, spec) for spec in settings["cells"]])]
    if predictions.empty:
        raise BenchmarkError(f"subgroups: no predictions of the cells subgroups.cells names ({settings['cells']})")
    rows = []
    for (dataset, task_name), task_frame in predictions[predictions["split"] == "test"].groupby(["dataset", "task"]):
        if dataset not in manifests:
            raise BenchmarkError(f"subgroups: no manifest given for dataset {dataset!r}")
        validation = predictions[(predictions["split"] == "val") & (predictions["dataset"] == dataset)
                                 & (predictions["task"] == task_name)]
        records = read_manifest(Path(manifests[dataset]))
        rows += task_subgroups(task_frame, validation, records, dataset, task_name, settings, stats)
    table = pd.DataFrame(rows).reindex(columns=SUBGROUP_COLUMNS)
    numeric = ["value", "ci_low", "ci_high", "overall", "gap", "gap_ci_low", "gap_ci_high", "method_gap_ci_low",
               "method_gap_ci_high"]
    table[numeric] = table[numeric].astype(float).round(6)
    return table


def write_subgroups(prediction_files: list[str], manifests: dict[str, str], out: Path, settings: dict,
                    stats: dict) -> None:
    """The ``subgroups`` command."""
    table = build_subgroups([Path(p) for p in prediction_files], {k: Path(v) for k, v in manifests.items()},
                            settings, stats)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    small = table["note"].fillna("").str.startswith("too small").sum()
    print(f"subgroups: {len(table)} rows ({small} too small) -> {out}")
