"""Shared helpers for reading the datasets' CSV tables with clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import BenchmarkError

# Manifest columns common to every dataset (dataset-specific caption fields follow).
MANIFEST_COLUMNS = [
    "dataset", "image_id", "patient_id", "exam_id", "breast_id", "laterality", "view",
    "dicom_path", "density", "birads", "cancer",
]


def read_csv(path: Path, what: str, required: list[str] = (), dtype: dict | None = None,
             keep_default_na: bool = True, unique: str | None = None, hint: str = "") -> pd.DataFrame:
    """Read a CSV; every way it can be unusable (missing, empty, not UTF-8, ragged rows,
    missing columns, a repeated ``unique`` value) is one line naming the file and, where
    there is one, the line or column. ``what`` names the file's role ("manifest", ...)."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"{path}: {what} not found{hint}")
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BenchmarkError(f"{path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                             "save the file as UTF-8") from None
    try:
        table = pd.read_csv(path, dtype=dtype, keep_default_na=keep_default_na, low_memory=False)
    except pd.errors.EmptyDataError:
        raise BenchmarkError(f"{path}: {what} is empty (not even a header line)") from None
    except pd.errors.ParserError as exc:
        raise BenchmarkError(f"{path}: {what} is not a well-formed CSV ({str(exc).strip().splitlines()[-1]})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise BenchmarkError(f"{path}: {what} is missing column(s) {', '.join(missing)}")
    if unique is not None and table[unique].duplicated().any():
        first = table.loc[table[unique].duplicated(), unique].iloc[0]
        lines = [str(i + 2) for i in np.flatnonzero((table[unique] == first).to_numpy())]
        raise BenchmarkError(f"{path}: {unique} {first!r} appears more than once (lines {', '.join(lines)})")
    return table


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest written by the preprocess step (identifiers as text, one row per image)."""
    return read_csv(path, "manifest", ["image_id", "patient_id", "exam_id", "breast_id", "png"],
                    dtype={"image_id": str, "patient_id": str, "exam_id": str, "breast_id": str},
                    unique="image_id", hint=" (the preprocess step writes it)")


def read_table(path: Path, required: list[str], str_columns: list[str]) -> pd.DataFrame:
    """Read a dataset table keeping identifiers as strings; empty text cells become None."""
    table = read_csv(path, "table", required, dtype={c: str for c in str_columns})
    for column in str_columns:
        if column in table.columns:
            table[column] = table[column].astype(object).where(table[column].notna(), None)
    return table


def parse_number(text, low: float | None = None, high: float | None = None) -> float | None:
    """A number from a cell's text (`` 52 ``, ``52.0``), or None if it is empty, not a
    number, or outside [low, high]."""
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        return None
    return value


def parse_int(text, allowed: set[int]) -> int | None:
    """An integer label from a cell's text (``1``, ``1.0``, `` 1 ``), or None if it is not
    one of ``allowed``."""
    value = parse_number(text)
    if value is None or value != int(value) or int(value) not in allowed:
        return None
    return int(value)


_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ESCAPING = re.compile(r"[/\\\x00-\x1f\x7f]")  # path separators, NUL and control characters


def safe_name(value: str) -> bool:
    """True for an identifier that can name a cache file as it is: lower-case letters,
    digits, '.', '_', '-', no leading dot or dash, no ``..``, at most 100 characters (so two
    ids never map to one file, even on a case-insensitive file system, and no name is too long
    for one). Others are hashed (``preprocess.cache_name``)."""
    return bool(_PLAIN.fullmatch(value or "")) and ".." not in value and len(value) <= 100


def id_problem(value: str) -> str | None:
    """Why an identifier cannot be one component of a path the data names (a patient or
    image folder or file), or None: spaces, accents, parentheses and the like are legal data;
    only an empty id, ``.`` or ``..``, path separators and control characters are not."""
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "would climb out of its folder"
    if _ESCAPING.search(value):
        return "holds a path separator or a control character"
    return None


EXCLUSION_COLUMNS = ["dataset", "image_id", "source", "scope", "reason"]


def exclusion(dataset: str, image_id: str, source: str, scope: str, reason: str) -> dict:
    """One row of exclusions.csv. ``scope`` is ``all`` or ``task:<name>``."""
    return {"dataset": dataset, "image_id": image_id, "source": source, "scope": scope, "reason": reason}


def resolve_under_root(root: Path, relative: str) -> Path | None:
    """The file for ``relative`` inside ``root``, or None if the path escapes the root. An
    absolute path (an image folder the config gives as absolute) is taken as it is, unless
    it climbs with ``..``."""
    if Path(relative).is_absolute():
        return None if ".." in Path(relative).parts else Path(relative)
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if root != candidate and root not in candidate.parents:
        return None
    return candidate
