"""``check-data``: validate a dataset folder before any training.

Reads the tables with the same loaders the workflow uses, checks that every image file
exists inside the root (without decoding), and reports counts per task and class and
what would be excluded and why. Missing tables or columns stop with one line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.data.tables import EXCLUSION_COLUMNS, exclusion, resolve_under_root
from benchmark.datasets import DATASETS, rows_in
from benchmark.tasks import TASKS


def load_records(dataset: str, entry: dict) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(records, table-level exclusions, rows in the main table) for one dataset entry."""
    registered = DATASETS[dataset]
    records, excluded = registered.load(Path(entry["root"]), entry)
    return records, excluded, rows_in(registered, entry)


def missing_files(records: pd.DataFrame, root: Path) -> pd.DataFrame:
    rows = []
    for rec in records.itertuples(index=False):
        path = resolve_under_root(root, rec.dicom_path)
        if path is None:
            rows.append(exclusion(rec.dataset, rec.image_id, rec.dicom_path, "all", "path escapes the data root"))
        elif not path.is_file():
            rows.append(exclusion(rec.dataset, rec.image_id, rec.dicom_path, "all", "DICOM file not found"))
        elif path.stat().st_size == 0:
            rows.append(exclusion(rec.dataset, rec.image_id, rec.dicom_path, "all", "zero-byte DICOM file"))
    return pd.DataFrame(rows, columns=EXCLUSION_COLUMNS)


def check_data(dataset: str, entry: dict) -> dict:
    """A report: rows, images usable, patients, class counts per task, exclusions by reason."""
    records, excluded, rows_in = load_records(dataset, entry)
    files = missing_files(records, Path(entry["root"]))
    exclusions = pd.concat([excluded, files], ignore_index=True)
    usable = records[~records["image_id"].isin(files["image_id"])]
    tasks = {}
    for task in TASKS.values():
        if task.dataset != dataset:
            continue
        labels = pd.to_numeric(usable[task.column], errors="coerce").dropna().astype(int)
        counts = labels.value_counts().reindex(list(task.classes), fill_value=0)
        tasks[task.name] = {"images": int(counts.sum()),
                            "patients": int(usable.loc[labels.index, "patient_id"].nunique()),
                            "classes": {str(k): int(v) for k, v in counts.items()}}
    by_reason = (exclusions.groupby(["scope", "reason"]).size().sort_values(ascending=False)
                 if len(exclusions) else pd.Series(dtype=int))
    return {
        "dataset": dataset, "root": str(entry["root"]), "rows": rows_in, "images_usable": len(usable),
        "patients": int(usable["patient_id"].nunique()), "exams": int(usable["exam_id"].nunique()),
        "excluded_all": int((exclusions["scope"] == "all").sum()), "tasks": tasks,
        "exclusions": [{"scope": s, "reason": r, "count": int(c)} for (s, r), c in by_reason.items()],
    }


def format_report(report: dict) -> str:
    lines = [f"{report['dataset']} at {report['root']}: {report['rows']} rows, {report['images_usable']} usable "
             f"images of {report['patients']} patients ({report['exams']} exams), "
             f"{report['excluded_all']} rows excluded"]
    for name, task in report["tasks"].items():
        classes = ", ".join(f"{k}: {v}" for k, v in task["classes"].items())
        lines.append(f"  task {name}: {task['images']} images, {task['patients']} patients; classes {classes}")
        empty = [k for k, v in task["classes"].items() if v == 0]
        if empty:
            lines.append(f"  warning: task {name} has no image of class(es) {', '.join(empty)}")
    if report["exclusions"]:
        lines.append("  excluded (scope, reason, count):")
        lines += [f"    {e['scope']:<13} {e['reason']}: {e['count']}" for e in report["exclusions"]]
    return "\n".join(lines)
