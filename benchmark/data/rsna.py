"""RSNA Screening Mammography ``train.csv`` to manifest records."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.data.tables import exclusion, read_table

REQUIRED = ["site_id", "patient_id", "image_id", "laterality", "view", "age", "cancer", "biopsy",
            "invasive", "BIRADS", "implant", "density", "machine_id", "difficult_negative_case"]
DENSITY_LETTER = {"A": 1, "B": 2, "C": 3, "D": 4}


def load_rsna(root: Path, table: str = "train.csv", images: str = "train_images"):
    root = Path(root)
    df = read_table(root / table, REQUIRED, ["patient_id", "image_id", "site_id", "machine_id"])
    records, excluded = [], []
    seen: set[str] = set()
    for i, row in enumerate(df.itertuples(index=False)):
        image_id, patient = str(row.image_id), str(row.patient_id)
        source = f"{table}:row {i + 2}"
        if image_id in seen:
            excluded.append(exclusion("rsna", image_id, source, "all", "duplicate image id"))
            continue
        seen.add(image_id)
        if str(row.cancer) not in ("0", "1"):
            excluded.append(exclusion("rsna", image_id, source, "all", f"cancer is {str(row.cancer)!r}, not 0 or 1"))
            continue
        density = DENSITY_LETTER.get(str(row.density).strip()) if isinstance(row.density, str) else None
        birads = None if pd.isna(row.BIRADS) else int(row.BIRADS)
        records.append({
            "dataset": "rsna", "image_id": image_id, "patient_id": patient, "exam_id": patient,
            "breast_id": f"{patient}_{row.laterality}", "laterality": str(row.laterality), "view": str(row.view),
            "dicom_path": f"{images}/{patient}/{image_id}.dcm", "density": density, "birads": birads,
            "cancer": int(row.cancer), "age": "" if pd.isna(row.age) else f"{float(row.age):g}",
            "site_id": str(row.site_id), "machine_id": str(row.machine_id),
        })
    return pd.DataFrame(records), pd.DataFrame(excluded)
