"""One entry point per figure family: read the saved artefacts, draw, save PNG and PDF
under the stems ``names.figure_stems`` gives (the names the workflow declares)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.tables import read_csv
from benchmark.evaluate.predictions import read_predictions
from benchmark.figures import names
from benchmark.figures.style import save


def _table(path) -> pd.DataFrame:
    if not path:
        raise ValueError("give --table")
    return read_csv(path, "table", ["dataset", "task", "protocol", "fraction", "model", "metric", "value"],
                    dtype={"fraction": str})


def _input(named_inputs: dict, key: str) -> str:
    if key not in named_inputs:
        raise ValueError(f"no --inputs {key}=PATH given")
    return named_inputs[key]


def draw_family(family: str, out_dir: Path, *, models: list[str], tasks: list[str], table=None,
                predictions=(), named_inputs=None, budget=None, subgroups=None) -> list[Path]:
    named_inputs = named_inputs or {}
    stems = names.figure_stems(family, tasks)
    written = []
    if family == "label_efficiency":
        from benchmark.figures.label_efficiency import plot_label_efficiency

        frame = _table(table)
        for task, stem in zip(tasks, stems):
            written += save(plot_label_efficiency(frame, task, models), out_dir, stem)
    elif family == "bars":
        from benchmark.figures.bars import plot_bars

        frame = _table(table)
        for task, stem in zip(tasks, stems):
            written += save(plot_bars(frame, task, models), out_dir, stem)
    elif family == "roc":
        from benchmark.figures.roc import plot_roc

        frame = _table(table)
        if not predictions:
            raise ValueError("give --predictions")
        runs = pd.concat([read_predictions(Path(p)) for p in predictions], ignore_index=True)
        for task, stem in zip(tasks, stems):
            dataset, name = task.split("/")
            rows = runs[(runs.dataset == dataset) & (runs.task == name)]
            written += save(plot_roc(rows, frame, task, models), out_dir, stem)
    elif family == "tsne":
        from benchmark.figures.tsne import plot_tsne

        for dataset, stem in zip(names.task_datasets(tasks), stems):
            coordinates = {m: read_csv(_input(named_inputs, f"{m}:{dataset}"), "t-SNE coordinates",
                                        dtype={"image_id": str}) for m in models}
            dataset_tasks = [t for t in tasks if t.startswith(f"{dataset}/")]
            written += save(plot_tsne(coordinates, dataset, dataset_tasks), out_dir, stem)
    elif family == "alignment":
        from benchmark.figures.alignment import plot_alignment

        maps = {m: dict(np.load(_input(named_inputs, m))) for m in models}
        written += save(plot_alignment(maps), out_dir, stems[0])
    elif family == "compute_ledger":
        from benchmark.figures.compute_ledger import plot_compute_ledger

        if not budget:
            raise ValueError("give --budget")
        written += save(plot_compute_ledger(read_csv(budget, "budget table"), models), out_dir, stems[0])
    elif family == "subgroups":
        from benchmark.figures.subgroups import plot_subgroups

        if not subgroups:
            raise ValueError("give --subgroups")
        frame = read_csv(subgroups, "subgroups table", ["dataset", "task", "protocol", "fraction", "model", "metric",
                                                        "attribute", "subgroup", "gap", "note"],
                         dtype={"fraction": str, "subgroup": str, "note": str}, keep_default_na=False)
        for column in ("gap", "method_gap_ci_low", "method_gap_ci_high"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        for task, stem in zip(tasks, stems):
            written += save(plot_subgroups(frame, task, models), out_dir, stem)
    return written
