"""Shared helpers for reading the datasets' CSV tables with clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.errors import BenchmarkError

# Manifest columns common to every dataset (dataset-specific caption fields follow).
MANIFEST_COLUMNS = [
    "dataset", "image_id", "patient_id", "exam_id", "breast_id", "laterality", "view",
    "dicom_path", "density", "birads", "cancer",
]


def read_table(path: Path, required: list[str], str_columns: list[str]) -> pd.DataFrame:
    """Read a CSV keeping identifiers as strings; a missing file or column is one line."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: table not found")
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise BenchmarkError(f"{path}: cannot parse CSV ({exc})") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise BenchmarkError(f"{path}: missing column(s) {', '.join(missing)}")
    dtypes = {c: str for c in str_columns if c in header}
    return pd.read_csv(path, dtype=dtypes, keep_default_na=True, low_memory=False)


EXCLUSION_COLUMNS = ["dataset", "image_id", "source", "scope", "reason"]


def exclusion(dataset: str, image_id: str, source: str, scope: str, reason: str) -> dict:
    """One row of exclusions.csv. ``scope`` is ``all`` or ``task:<name>``."""
    return {"dataset": dataset, "image_id": image_id, "source": source, "scope": scope, "reason": reason}


def resolve_under_root(root: Path, relative: str) -> Path | None:
    """The file for ``relative`` inside ``root``, or None if the path escapes the root."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if root != candidate and root not in candidate.parents:
        return None
    return candidate
