"""RSNA Screening Mammography ``train.csv`` to manifest records.

Every cell is read as text and parsed per row, so one odd cell affects its own row only:
``1``, ``1.0`` and `` 1 `` are the label 1; a cancer label that is anything else excludes
its row with the cell's content as the reason; an unreadable age, BI-RADS or density is
left empty for that row and recorded (scope ``field:<column>``, the row is kept).
Identifiers used in file paths must be plain names (letters, digits, ``.``, ``_``, ``-``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.data.tables import (
    EXCLUSION_COLUMNS,
    exclusion,
    id_problem,
    parse_int,
    parse_number,
    read_table,
)

REQUIRED = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy",
            "invasive", "BIRADS", "implant", "density", "machine_id", "difficult_negative_case"]
DENSITY_LETTER = {"A": 1, "B": 2, "C": 3, "D": 4}
RECORD_COLUMNS = ["dataset", "image_id", "patient_id", "exam_id", "breast_id", "laterality", "view", "dicom_path",
                  "density", "birads", "cancer", "age", "site_id", "machine_id"]


def load_rsna(root: Path, table: str = "train.csv", images: str = "train_images"):
    root = Path(root)
    df = read_table(root / table, REQUIRED, REQUIRED)  # every column as text
    records, excluded = [], []
    seen: set[str] = set()
    for i, row in enumerate(df.itertuples(index=False)):
        image_id, patient = (row.image_id or "").strip(), (row.patient_id or "").strip()
        source = f"{table}:row {i + 2}"

        def drop(reason: str, image_id=image_id, source=source) -> None:
            excluded.append(exclusion("rsna", image_id, source, "all", reason))

        def note(column: str, reason: str, image_id=image_id, source=source) -> None:
            excluded.append(exclusion("rsna", image_id, source, f"field:{column}", reason))

        unsafe = [f"{name} {value!r} {id_problem(value)}" for name, value in (("image_id", image_id), ("patient_id", patient))
                  if id_problem(value)]
        if unsafe:
            drop(f"{' and '.join(unsafe)}: it names the DICOM's folder and file (train_images/<patient_id>/<image_id>.dcm)")
            continue
        if image_id in seen:
            drop("duplicate image id")
            continue
        seen.add(image_id)
        cancer = parse_int(row.cancer, {0, 1})
        if cancer is None:
            drop(f"cancer is {row.cancer!r}, not 0 or 1")
            continue
        laterality = (row.laterality or "").strip()
        if laterality not in ("L", "R"):
            drop(f"laterality is {row.laterality!r}, not L or R")
            continue
        age = parse_number(row.age, 0, 130)
        if age is None and (row.age or "").strip():
            note("age", f"age is {row.age!r}, not a number of years; left empty")
        birads = parse_int(row.BIRADS, {0, 1, 2})
        if birads is None and (row.BIRADS or "").strip():
            note("BIRADS", f"BIRADS is {row.BIRADS!r}, not 0, 1 or 2; left empty")
        density_text = (row.density or "").strip()
        density = DENSITY_LETTER.get(density_text)
        if density is None and density_text:
            note("density", f"density is {row.density!r}, not A to D; left empty")
        records.append({
            "dataset": "rsna", "image_id": image_id, "patient_id": patient, "exam_id": patient,
            "breast_id": f"{patient}_{laterality}", "laterality": laterality, "view": (row.view or "").strip(),
            "dicom_path": f"{images}/{patient}/{image_id}.dcm", "density": density, "birads": birads,
            "cancer": cancer, "age": "" if age is None else f"{age:g}",
            "site_id": (row.site_id or "").strip(), "machine_id": (row.machine_id or "").strip(),
        })
    return pd.DataFrame(records, columns=RECORD_COLUMNS), pd.DataFrame(excluded, columns=EXCLUSION_COLUMNS)
