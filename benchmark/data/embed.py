"""EMBED tables to manifest records: join, filters, BI-RADS rule (METHODS.md section 1).

One metadata row is one DICOM. Findings (clinical rows) join on ``acc_anon``; an image
takes the rows whose ``side`` equals its laterality, or is ``B`` or empty. Its BI-RADS
is the worst assessment, except that 0 wins when every assessment is at most 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.tables import exclusion, read_table

META_REQUIRED = ["empi_anon", "acc_anon", "anon_dicom_path", "ImageLateralityFinal", "ViewPosition",
                 "FinalImageType", "spot_mag", "StudyDescription"]
CLIN_REQUIRED = ["empi_anon", "acc_anon", "desc", "side", "asses", "tissueden", "age_at_study"]
ID_COLUMNS = ["empi_anon", "acc_anon"]
ASSES_TO_BIRADS = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
FINDING_COLUMNS = ["massshape", "massmargin", "massdens", "calcfind", "calcdistri"]
RACE_COLUMNS = ["RACE_DESC", "ETHNICITY_DESC"]  # the name differs between table versions


def combine_birads(values: list[int]) -> int:
    """The image's BI-RADS from all findings that apply to it."""
    if max(values) <= 2 and 0 in values:
        return 0
    return max(values)


def _clean(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return " ".join(str(value).split())  # free text can carry double spaces


def load_embed(root: Path, metadata: str, clinical: str, path_prefix: dict[str, str]):
    """Return (records, exclusions) as DataFrames; records follow ``MANIFEST_COLUMNS``."""
    root = Path(root)
    meta = read_table(root / metadata, META_REQUIRED, ID_COLUMNS)
    clin = read_table(root / clinical, CLIN_REQUIRED, ID_COLUMNS)
    race_col = next((c for c in RACE_COLUMNS if c in clin.columns), None)
    clin["side"] = clin["side"].fillna("").astype(str).str.strip()
    clin["asses"] = clin["asses"].fillna("").astype(str).str.strip()
    findings_by_exam = {acc: rows for acc, rows in clin.groupby("acc_anon", sort=False)}

    records, excluded = [], []
    seen: set[str] = set()
    for i, row in enumerate(meta.itertuples(index=False)):
        path = str(row.anon_dicom_path)
        relative = _remap(path, path_prefix)
        image_id = Path(path).stem
        source = f"{metadata}:row {i + 2}"  # the header is line 1
        if image_id in seen:
            excluded.append(exclusion("embed", image_id, source, "all", "duplicate image id"))
            continue
        seen.add(image_id)
        if _clean(row.FinalImageType) != "2D":
            excluded.append(exclusion("embed", image_id, source, "all",
                                      f"FinalImageType is {_clean(row.FinalImageType) or 'empty'}, not 2D"))
            continue
        if _clean(row.spot_mag) in ("1", "1.0"):
            excluded.append(exclusion("embed", image_id, source, "all", "spot compression or magnification view"))
            continue
        if relative is None:
            excluded.append(exclusion("embed", image_id, source, "all",
                                      f"anon_dicom_path does not start with a configured prefix: {path}"))
            continue
        side = _clean(row.ImageLateralityFinal)
        exam = findings_by_exam.get(row.acc_anon)
        if exam is None:
            excluded.append(exclusion("embed", image_id, source, "all", "no clinical row for acc_anon"))
            continue
        applies = exam[(exam["side"] == side) | exam["side"].isin(["B", ""])]
        if applies.empty:
            excluded.append(exclusion("embed", image_id, source, "all", f"no finding row for side {side}"))
            continue
        letters = applies["asses"].tolist()
        unknown = sorted({a for a in letters if a not in ASSES_TO_BIRADS and a != "X"})
        birads, worst = None, applies.iloc[0]
        if unknown:
            excluded.append(exclusion("embed", image_id, source, "task:birads", f"unknown asses code(s) {unknown}"))
        elif "X" in letters:
            excluded.append(exclusion("embed", image_id, source, "task:birads", "asses X (no assessment)"))
        else:
            values = [ASSES_TO_BIRADS[a] for a in letters]
            birads = combine_birads(values)
            worst = applies.iloc[values.index(birads)]
        density = pd.to_numeric(applies["tissueden"], errors="coerce").dropna()
        density = int(density.iloc[0]) if len(density) else None
        if density == 5:
            excluded.append(exclusion("embed", image_id, source, "task:density", "tissueden 5 (normal male)"))
            density = None
        elif density is not None and density not in (1, 2, 3, 4):
            excluded.append(exclusion("embed", image_id, source, "task:density", f"unknown tissueden {density}"))
            density = None
        elif density is None:
            excluded.append(exclusion("embed", image_id, source, "task:density", "tissueden missing"))
        records.append({
            "dataset": "embed", "image_id": image_id, "patient_id": str(row.empi_anon),
            "exam_id": str(row.acc_anon), "breast_id": f"{row.acc_anon}_{side}", "laterality": side,
            "view": _clean(row.ViewPosition), "dicom_path": relative, "density": density, "birads": birads,
            "cancer": None,
            "study_description": _clean(row.StudyDescription),
            "reason": _reason(_clean(worst["desc"]) or _clean(row.StudyDescription)),
            "age": _clean(worst["age_at_study"]),
            "race": _clean(worst[race_col]) if race_col else "",
            "ethnicity": _clean(worst.get("ETHNIC_GROUP_DESC", "")),
            "image_type": _clean(row.FinalImageType),
            **{c: _clean(worst.get(c, "")) for c in FINDING_COLUMNS},
        })
    return pd.DataFrame(records), pd.DataFrame(excluded)


def _reason(desc: str) -> str:
    if not desc:
        return ""
    return "screening" if "screen" in desc.lower() else "diagnostic"


def _remap(path: str, prefixes: dict[str, str]) -> str | None:
    for old, new in prefixes.items():
        if path.startswith(old):
            return new + path[len(old):]
    return None
