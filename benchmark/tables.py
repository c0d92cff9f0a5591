"""Predictions to ``results/table.csv`` (columns in README.md, What you get) and ledgers to ``budget.csv``.

For each (dataset, task) every model and protocol is resampled with the same patient
bootstrap matrix, so deltas against the reference model are paired. A cell's replicates
are its pretraining seeds and, for label fractions below 1, the patient draws of the
fraction (``seeds`` lists them as ``seed`` or ``seed/draw``); a resample's value is the
mean over replicates, and ``seed_std`` is the spread of the full-set values across
replicates, reported separately from the bootstrap interval. For binary AUC deltas,
``p_delong`` is DeLong's test on the full set (first replicate of each model), clustered
by patient (Obuchowski 1997), a cross-check of the bootstrap. ``note`` says why a value is NaN.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import BenchmarkError
from benchmark.evaluate.predictions import read_predictions, score_columns, score_matrix
from benchmark.metrics import METRICS
from benchmark.stats import (
    Replicates,
    delong_contrast,
    holm,
    method_level_test,
    paired_p_value,
    patient_strata,
    percentile_ci,
    resample_matrix,
)
from benchmark.tasks import get_task

TABLE_COLUMNS = ["dataset", "task", "protocol", "fraction", "model", "metric", "value", "ci_low", "ci_high",
                 "n_images", "n_patients", "n_boot", "seeds", "seed_std", "delta_vs_ref", "delta_ci_low",
                 "delta_ci_high", "p_value", "method_ci_low", "method_ci_high", "method_delta_ci_low",
                 "method_delta_ci_high", "method_p_value", "p_adjusted", "p_delong", "control", "delta_vs_control",
                 "control_delta_ci_low", "control_delta_ci_high", "control_p_value", "note"]
CHANCE_NOTE = "pretraining ended at chance"  # begins the note of such a model's rows (the wide tables mark them)
NOT_TRAINED_HERE = "external checkpoint, not trained under this benchmark's budget"  # the note of such rows
BUDGET_COLUMNS = ["model", "method", "preset", "seed", "trained_here", "samples_seen", "optimizer_steps", "batch_size",
                  "grad_accum", "processes", "wall_seconds", "device", "precision", "device_seconds", "flops", "params_total",
                  "params_trainable", "peak_memory_bytes", "image_text_term", "image_text_final", "image_text_chance",
                  "image_text_floor", "at_chance"]


def evaluation_units(frame: pd.DataFrame, task, breast_level: bool):
    """Labels, scores and patient of each evaluated unit (an image, or a breast)."""
    if not breast_level:
        return frame["label"].to_numpy(int), score_matrix(frame, task.n_classes), frame["patient_id"].to_numpy()
    grouped = frame.groupby("breast_id", sort=True)
    scores = grouped[score_columns(task.n_classes)].mean()
    return grouped["label"].max().to_numpy(int), scores.to_numpy(), grouped["patient_id"].first().to_numpy()


def cell_mask(frame: pd.DataFrame, spec: dict) -> np.ndarray:
    """Rows of ``frame`` (the table, or predictions) in the cell ``spec`` names: its protocol
    and, when given, its label fraction (none for zero-shot)."""
    match = (frame["protocol"] == spec["protocol"]).to_numpy(dtype=bool, copy=True)
    if spec.get("fraction") is not None:
        match &= np.isclose(pd.to_numeric(frame["fraction"], errors="coerce"), float(spec["fraction"]))
    return match


def primary_rows(table: pd.DataFrame, primary: list[dict], controls: list[str] = ()) -> np.ndarray:
    """Rows of the primary comparisons: a delta against the reference in a cell the config's
    ``stats.primary`` names (protocol, fraction, metric, and optionally task), for every
    model but the untrained ``controls``."""
    chosen = np.zeros(len(table), bool)
    for spec in primary:
        match = cell_mask(table, spec) & (table["metric"] == spec["metric"]).to_numpy()
        if spec.get("task"):
            match &= ((table["dataset"] + "/" + table["task"]) == spec["task"]).to_numpy()
        chosen |= match
    return chosen & table["delta_vs_ref"].notna().to_numpy() & ~table["model"].isin(list(controls)).to_numpy()


def add_replicates(values: dict, cells: dict) -> None:
    """Each entry's ``replicates`` (its (seed, draw) pairs, in the order of its values) and
    ``reps`` (a ``Replicates`` holding them with the values), the input of the method-level
    inference (``stats.method_level_test``)."""
    for (protocol, fraction, model, _), entry in sorted(values.items()):
        replicates = entry["replicates"] = sorted((int(s), int(d)) for (p, f, m, s, d) in cells
                                                  if (p, f, m) == (protocol, fraction, model))
        entry["reps"] = Replicates(np.array(entry["full"]), np.array(entry["boot"]),
                                   np.array([s for s, _ in replicates]), np.array([d for _, d in replicates]))


def task_cells(task_frame: pd.DataFrame, dataset: str, task_name: str) -> dict[tuple, pd.DataFrame]:
    """A task's test predictions per (protocol, fraction, model, seed, draw), each over the
    same test images in the same order."""
    image_ids = np.sort(task_frame["image_id"].unique())
    cells = {}
    for key, cell in task_frame.groupby(["protocol", "fraction", "model", "seed", "draw"], sort=True):
        cell = cell.set_index("image_id")
        if len(cell) != len(image_ids) or not cell.index.isin(image_ids).all():
            raise BenchmarkError(f"table: {dataset}/{task_name} {key}: predictions cover other test images "
                                 "than the rest of the task (mixed splits?)")
        cells[key] = cell.loc[image_ids].reset_index()
    return cells


def task_resamples(any_cell: pd.DataFrame, dataset: str, task_name: str, seed: int,
                   n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """A task's test patients (sorted) and its (n_boot, patients) resample matrix, stratified
    by each patient's rarest class and seeded by (seed, task): table.csv and subgroups.csv
    share it, so a subgroup's values are paired with the table's."""
    patients, patient_index = np.unique(any_cell["patient_id"].to_numpy(), return_inverse=True)
    strata = patient_strata(any_cell["label"].to_numpy(int), patient_index, len(patients))
    rng = np.random.default_rng([seed, zlib.crc32(f"{dataset}/{task_name}".encode())])
    return patients, resample_matrix(strata, n_boot, rng)


def metric_values(cells: dict, val_cells: dict, task, resamples_bp: np.ndarray, patient_pos: dict,
                  metrics: list | None = None) -> dict:
    """``values[(protocol, fraction, model, metric)]``: per replicate (seed, draw), the
    full-set value, the bootstrap values and the evaluated units, for every registered
    metric (or ``metrics``). Thresholds come from each cell's own validation rows; metrics
    that need one are skipped for cells without them."""
    values = {}
    everyone = np.ones((1, resamples_bp.shape[1]))
    for key, cell in sorted(cells.items()):
        protocol, fraction, model, _, _ = key
        thresholds = {}  # (rule, breast level) -> the threshold chosen on this cell's validation rows
        units = {}  # breast level -> the cell's units and each unit's patient position, shared by the metrics
        for metric in METRICS.values() if metrics is None else metrics:
            rule = metric.threshold_rule(task)
            if not metric.applies(task) or (metric.threshold and key not in val_cells):
                continue
            breast = metric.units == "breast"
            if breast not in units:
                y, scores, unit_patients = evaluation_units(cell, task, breast)
                units[breast] = y, scores, np.array([patient_pos[p] for p in unit_patients])
            y, scores, patient_n = units[breast]
            if rule is not None and key in val_cells:  # thresholds from validation only
                if (rule, breast) not in thresholds:
                    y_val, scores_val, _ = evaluation_units(val_cells[key], task, breast)
                    thresholds[rule, breast] = rule(y_val, scores_val[:, 1])
                threshold = thresholds[rule, breast]
                full = metric.compute(y, scores[:, 1], threshold, everyone, patient_n)
                boot = metric.compute(y, scores[:, 1], threshold, resamples_bp, patient_n)
            elif metric.binary and not metric.threshold:  # a probabilistic two-class metric
                full = metric.compute(y, scores[:, 1], everyone, patient_n)
                boot = metric.compute(y, scores[:, 1], resamples_bp, patient_n)
            else:
                full = metric.compute(y, scores, everyone, patient_n)
                boot = metric.compute(y, scores, resamples_bp, patient_n)
            entry = values.setdefault((protocol, fraction, model, metric.name), {"full": [], "boot": [], "units": []})
            entry["full"].append(float(full[0]))
            entry["boot"].append(boot)
            entry["units"].append((y, scores, patient_n))
    return values


def table_row(entry: dict, ref: dict | None, cell: tuple, task, level: float, n_boot: int, n_images: int,
              n_patients: int, control: tuple[str, dict] | None = None) -> dict:
    """One row of table.csv from a cell's replicates (and the reference model's, for deltas;
    and the model's own untrained architecture's, ``control``: (name, entry))."""
    dataset, task_name, protocol, fraction, model, metric = cell
    replicates = entry["replicates"]  # (seed, draw), in the order of entry["full"] and entry["boot"]
    seeds = [f"{s}/{d}" if any(d for _, d in replicates) else str(s) for s, d in replicates]
    value = float(np.mean(entry["full"]))
    boot = np.mean(entry["boot"], axis=0)
    lo, hi = percentile_ci(boot, level)
    own = method_level_test([(1.0, entry["reps"])], level)
    row = {"dataset": dataset, "task": task_name, "protocol": protocol, "fraction": fraction,
           "model": model, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi,
           "n_images": n_images, "n_patients": n_patients, "n_boot": n_boot, "seeds": " ".join(seeds),
           "seed_std": float(np.std(entry["full"], ddof=1)) if len(seeds) > 1 else np.nan,
           "delta_vs_ref": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan, "p_value": np.nan,
           "p_adjusted": np.nan, "p_delong": np.nan,
           **dict(zip(("method_ci_low", "method_ci_high"), own.clipped(0.0, 1.0))),
           "method_delta_ci_low": np.nan, "method_delta_ci_high": np.nan, "method_p_value": np.nan,
           "note": _degenerate_note(entry["units"][0][0], value, task.n_classes, metric)}
    if control is not None:  # what pretraining added to this architecture, at the method level
        name, untrained = control
        gain = method_level_test([(1.0, entry["reps"]), (-1.0, untrained["reps"])], level)
        row.update(control=name, delta_vs_control=gain.estimate, control_p_value=gain.p_value)
        row["control_delta_ci_low"], row["control_delta_ci_high"] = gain.clipped(-1.0, 1.0)
    if ref is None:
        return row
    delta_b = boot - np.mean(ref["boot"], axis=0)
    row["delta_vs_ref"] = value - float(np.mean(ref["full"]))
    row["delta_ci_low"], row["delta_ci_high"] = percentile_ci(delta_b, level)
    row["p_value"] = paired_p_value(delta_b)
    versus = method_level_test([(1.0, entry["reps"]), (-1.0, ref["reps"])], level)
    row["method_delta_ci_low"], row["method_delta_ci_high"] = versus.clipped(-1.0, 1.0)
    row["method_p_value"] = versus.p_value
    row["p_delong"] = delong_p_value(entry["units"], ref["units"], metric)
    return row


def delong_p_value(units: list[tuple], ref_units: list[tuple], metric: str) -> float:
    """DeLong's test (clustered by patient) of this row's own delta: the mean AUC over the
    model's replicates minus the mean over the reference's, all scored on the same units.
    Binary AUC rows only; NaN elsewhere."""
    y = units[0][0]
    if not metric.startswith("auc") or units[0][1].shape[1] != 2 or any((u[0] != y).any() for u in ref_units):
        return np.nan
    scores_kn = np.stack([u[1][:, 1] for u in units] + [u[1][:, 1] for u in ref_units])
    weights_k = np.r_[np.full(len(units), 1 / len(units)), np.full(len(ref_units), -1 / len(ref_units))]
    return delong_contrast(y == 1, scores_kn, weights_k, units[0][2])[1]


def build_table(prediction_files: list[Path], n_boot: int, seed: int, level: float,
                reference: str | None, primary: list[dict] = (), controls: list[str] = (),
                control_of: dict[str, str] | None = None) -> pd.DataFrame:
    """table.csv from predictions files: per task, one patient-resampling matrix shared by
    every model and protocol (so deltas are paired), the metric values of every cell, the
    method-level resamples, then a row per (protocol, fraction, model, metric)."""
    if not prediction_files:
        raise BenchmarkError("table: no prediction files given")
    predictions = pd.concat([read_predictions(path) for path in prediction_files], ignore_index=True)
    if not (predictions["split"] == "test").any():
        raise BenchmarkError(f"table: none of the {len(prediction_files)} predictions file(s) has a test-split row")
    return table_from_predictions(predictions, n_boot, seed, level, reference, primary, controls,
                                  control_of=control_of)


def table_from_predictions(predictions: pd.DataFrame, n_boot: int, seed: int, level: float, reference: str | None,
                           primary: list[dict] = (), controls: list[str] = (),
                           metrics: list[str] | None = None, control_of: dict[str, str] | None = None) -> pd.DataFrame:
    """The table of already read predictions (validation and test rows), for every registered
    metric or the ``metrics`` named (the calibration simulation asks for AUC alone).
    ``controls``: the untrained models (outside the primary family); ``control_of``: each
    pretrained model's own untrained architecture, for the ``*_control`` columns."""
    control_of = control_of or {}
    validation = predictions[predictions["split"] == "val"]
    predictions = predictions[predictions["split"] == "test"]
    chosen = None if metrics is None else [METRICS[name] for name in metrics]
    rows = []
    for (dataset, task_name), task_frame in predictions.groupby(["dataset", "task"], sort=True):
        task = get_task(dataset, task_name)
        cells = task_cells(task_frame, dataset, task_name)
        any_cell = next(iter(cells.values()))
        patients, resamples_bp = task_resamples(any_cell, dataset, task_name, seed, n_boot)
        val_cells = dict(iter(validation[(validation["dataset"] == dataset) & (validation["task"] == task_name)]
                              .groupby(["protocol", "fraction", "model", "seed", "draw"], sort=True)))
        values = metric_values(cells, val_cells, task, resamples_bp, {p: i for i, p in enumerate(patients)}, chosen)
        add_replicates(values, cells)
        for (protocol, fraction, model, metric), entry in sorted(values.items()):
            ref = values.get((protocol, fraction, reference, metric)) if reference and model != reference else None
            untrained = values.get((protocol, fraction, control_of.get(model), metric))
            rows.append(table_row(entry, ref, (dataset, task_name, protocol, fraction, model, metric), task, level,
                                  n_boot, len(any_cell), len(patients),
                                  (control_of[model], untrained) if untrained is not None else None))
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    family = primary_rows(table, primary, controls)  # one family: every primary comparison, Holm within it
    table["p_adjusted"] = np.nan
    table.loc[family, "p_adjusted"] = holm(table.loc[family, "method_p_value"].to_numpy(float))
    numeric = ["value", "ci_low", "ci_high", "seed_std", "delta_vs_ref", "delta_ci_low", "delta_ci_high", "p_value",
               "method_ci_low", "method_ci_high", "method_delta_ci_low", "method_delta_ci_high", "method_p_value",
               "p_adjusted", "p_delong", "delta_vs_control", "control_delta_ci_low", "control_delta_ci_high",
               "control_p_value"]
    table[numeric] = table[numeric].astype(float).round(6)
    return table


def _degenerate_note(y: np.ndarray, value: float, n_classes: int, metric: str) -> str:
    """Why a value is NaN, or forced by a test set that lacks some of the task's classes."""
    present = sorted(int(k) for k in np.unique(y))
    if np.isnan(value):
        if len(present) < 2:
            return f"test set has a single class ({present[0]}): the metric is undefined"
        return "undefined on the full test set"
    absent = [k for k in range(n_classes) if k not in present]
    if absent:
        return (f"test set lacks class(es) {', '.join(map(str, absent))}: {metric} covers only the classes "
                "present, and with one class it is forced (e.g. balanced accuracy 1 or 0)")
    return ""


def write_tables(prediction_files: list[Path], ledger_files: list[Path], out: Path, budget_out: Path,
                 stats: dict, controls: list[str] = (), control_of: dict[str, str] | None = None) -> None:
    """The ``table`` command: table.csv with its wide .md, .tex and .html, budget.csv and
    loss_terms.csv beside it. Rows of a model whose pretraining ended at chance on its
    image-text loss say so in their note."""
    from benchmark.wide_tables import to_html, to_latex, to_markdown

    table = build_table([Path(p) for p in prediction_files], stats["n_boot"], stats["seed"], stats["ci"],
                        stats.get("reference_model"), stats.get("primary", []), controls, control_of)
    if ledger_files:
        budget, terms = build_budget([Path(p) for p in ledger_files], stats["chance_margin"])
        notes = chance_notes(budget, stats["chance_margin"])
        notes.update({model: NOT_TRAINED_HERE for model in budget.loc[~budget["trained_here"].astype(bool), "model"]})
        for model, note in notes.items():
            rows = table["model"] == model
            table.loc[rows, "note"] = [f"{old}; {note}" if old else note for old in table.loc[rows, "note"]]
        budget.to_csv(budget_out, index=False)
        terms.to_csv(Path(budget_out).with_name("loss_terms.csv"), index=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    out.with_suffix(".md").write_text(to_markdown(table))
    out.with_suffix(".tex").write_text(to_latex(table))
    out.with_suffix(".html").write_text(to_html(table))
    print(f"table: {len(table)} rows -> {out}")


def build_budget(ledger_files: list[Path], chance_margin: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """budget.csv (one row per pretraining run, with its image-text loss against chance) and
    loss_terms.csv (each loss term's final value and chance level, one row per run and term)."""
    rows, terms = [], []
    for path in sorted(ledger_files):
        if not Path(path).is_file():
            raise BenchmarkError(f"{path}: ledger not found (the pretrain step writes it)")
        try:
            ledger = json.loads(Path(path).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchmarkError(f"{path}: not a readable ledger ({exc})") from None
        model = Path(path).parent.parent.name
        logged = ledger.get("loss_terms") or {}
        term = ledger.get("image_text_term")
        final, chance = (logged.get(term) or {}).get("final"), (logged.get(term) or {}).get("chance")
        floor = (logged.get(term) or {}).get("floor") or 0.0  # the lowest reachable value (0: hard targets)
        # at chance: less than chance_margin of the way from chance down to the floor
        at_chance = None if final is None or chance is None else bool(final >= chance - chance_margin * (chance - floor))
        spent = BUDGET_COLUMNS[1:BUDGET_COLUMNS.index("image_text_term")]
        ledger.setdefault("trained_here", True)  # an external checkpoint's ledger says False
        rows.append({"model": model, **{k: ledger.get(k) for k in spent}, "image_text_term": term, "image_text_final": final, "image_text_chance": chance,
                     "image_text_floor": floor if chance is not None else None, "at_chance": at_chance})
        terms += [{"model": model, "seed": ledger.get("seed"), "term": name, "final": values["final"],
                   "chance": values["chance"], "floor": values.get("floor"), "image_text": name == term}
                  for name, values in logged.items()]
    return (pd.DataFrame(rows, columns=BUDGET_COLUMNS),
            pd.DataFrame(terms, columns=["model", "seed", "term", "final", "chance", "floor", "image_text"]))


def chance_notes(budget: pd.DataFrame, chance_margin: float) -> dict[str, str]:
    """Per model whose image-text loss ended less than ``chance_margin`` of the way from chance
    to its floor in any pretraining run: a note naming the term, its final value per seed,
    chance and floor."""
    notes = {}
    for model, runs in budget.groupby("model", sort=True):
        if not runs["at_chance"].fillna(False).astype(bool).any():
            continue
        finals = ", ".join(f"seed {int(r.seed)} {r.image_text_final:.3f}" for r in runs.itertuples())
        floor = runs["image_text_floor"].iloc[0]
        floor_text = f", floor {floor:.3f}" if floor else ""
        notes[model] = (f"{CHANCE_NOTE}: {runs['image_text_term'].iloc[0]} {finals} against chance "
                        f"{runs['image_text_chance'].iloc[0]:.3f}{floor_text} (less than {chance_margin:.0%} of the "
                        "way to the floor; stats.chance_margin): "
                        "it learned little of its pretraining task; its gain over its untrained architecture "
                        "(delta_vs_control) says whether that little is of use")
    return notes
