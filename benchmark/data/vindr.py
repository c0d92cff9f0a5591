"""VinDr-Mammo 1.0.0 (PhysioNet) to manifest records (docs/real-data.md, VinDr-Mammo).

The release: ``breast-level_annotations.csv`` (one row per image: ``study_id, series_id,
image_id, laterality, view_position, height, width, breast_birads, breast_density,
split``, BI-RADS as ``BI-RADS 1`` .. ``BI-RADS 5``, density as ``DENSITY A`` .. ``DENSITY
D``, split ``training`` or ``test``), ``finding_annotations.csv`` (one row per finding box,
or one ``['No Finding']`` row per image: the same columns plus ``finding_categories``, a
Python list as text, ``finding_birads`` and the box), ``metadata.csv`` (DICOM tags of each
image by ``SOP Instance UID``, which the release sets to the image id) and
``images/<study_id>/<image_id>.dicom``.

VinDr has no patient id: its de-identification hashes the study, series and image UIDs and
drops the patient's. Each study is taken as its own patient (``patient_id`` = study id), so
the split, the label fractions and the bootstrap resample studies; a woman imaged twice
would count twice (the data paper describes 5,000 exams; say so when reporting).

Labels, per breast as the field evaluates them: BI-RADS 1 to 5 and density A to D from the
breast-level table; ``mass`` and ``calcification`` are 1 when any finding box of either view
of the breast lists ``Mass`` or ``Suspicious Calcification`` (GLAM's evaluation reads them
per image; a breast-level label does not change with the view a box was drawn on). The
official split is kept (``release_split``: the split step puts test studies in test and
carves validation from the training studies). Bad cells exclude their row, or, for a
field only some tasks use, leave it empty with a recorded note.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from benchmark.data.tables import (
    EXCLUSION_COLUMNS,
    exclusion,
    id_problem,
    parse_number,
    read_csv,
    read_table,
)

BREAST_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "breast_birads",
                  "breast_density", "split"]
FINDING_COLUMNS = ["study_id", "image_id", "laterality", "finding_categories"]
METADATA_ID = "SOP Instance UID"
BIRADS = {f"BI-RADS {k}": k for k in range(1, 6)}
DENSITY = {f"DENSITY {letter}": k for k, letter in enumerate("ABCD", start=1)}
SPLIT = {"training": "train", "test": "test"}
# finding categories whose presence in a breast makes its binary task positive
FINDING_TASKS = {"mass": "Mass", "calcification": "Suspicious Calcification"}
RECORD_COLUMNS = ["dataset", "image_id", "patient_id", "exam_id", "breast_id", "laterality", "view", "dicom_path",
                  "density", "birads", "cancer", "mass", "calcification", "age", "manufacturer", "machine_model",
                  "release_split"]


def _normalised(name: str) -> str:
    return name.replace("\u2019", "'").strip()  # the release's tag list spells "Manufacturer’s Model Name"


def read_metadata(path: Path) -> dict[str, dict]:
    """Age in years, manufacturer and model of each image id, from ``metadata.csv``."""
    table = read_csv(path, "metadata", [METADATA_ID], dtype=str, keep_default_na=False)  # every tag as text
    table.columns = [_normalised(c) for c in table.columns]
    out = {}
    for row in table.to_dict("records"):
        age_text = (row.get("Patient's Age") or "").strip()  # DICOM AS: "053Y"
        age = parse_number(age_text[:-1] if age_text.upper().endswith("Y") else age_text, 0, 130)
        out[(row[METADATA_ID] or "").strip()] = {
            "age": "" if age is None else f"{age:g}", "age_text": age_text,
            "manufacturer": (row.get("Manufacturer") or "").strip(),
            "model": (row.get("Manufacturer's Model Name") or "").strip()}
    return out


def finding_breasts(path: Path, known_images: set[str]) -> tuple[dict[str, set[str]], list[dict]]:
    """For each breast (``<study>_<L|R>``) the finding categories of its boxes, and the
    exclusions of rows that cannot be read (an unparseable category list, an image the
    breast-level table does not have)."""
    table = read_table(path, FINDING_COLUMNS, FINDING_COLUMNS)
    found: dict[str, set[str]] = {}
    problems = []
    for i, row in enumerate(table.itertuples(index=False)):
        source, image_id = f"{path.name}:row {i + 2}", (row.image_id or "").strip()
        try:
            categories = ast.literal_eval((row.finding_categories or "").strip())
            if not isinstance(categories, list | tuple) or not all(isinstance(c, str) for c in categories):
                raise ValueError
        except (ValueError, SyntaxError):
            problems.append(exclusion("vindr", image_id, source, "field:finding_categories",
                                      f"finding_categories is {row.finding_categories!r}, not a list of names; "
                                      "the finding is not counted"))
            continue
        if image_id not in known_images:
            problems.append(exclusion("vindr", image_id, source, "finding",
                                      "finding of an image the breast-level table does not list; not counted"))
            continue
        breast = f"{(row.study_id or '').strip()}_{(row.laterality or '').strip()}"
        found.setdefault(breast, set()).update(c.strip() for c in categories)
    return found, problems


def load_vindr(root: Path, breast_table: str = "breast-level_annotations.csv",
               finding_table: str = "finding_annotations.csv", metadata: str = "metadata.csv",
               images: str = "images"):
    root = Path(root)
    df = read_table(root / breast_table, BREAST_COLUMNS, BREAST_COLUMNS)
    meta = read_metadata(root / metadata)
    found, excluded = finding_breasts(root / finding_table, {(v or "").strip() for v in df["image_id"]})
    records, seen = [], set()
    for i, row in enumerate(df.itertuples(index=False)):
        image_id, study = (row.image_id or "").strip(), (row.study_id or "").strip()
        source = f"{breast_table}:row {i + 2}"

        def drop(reason: str, image_id=image_id, source=source) -> None:
            excluded.append(exclusion("vindr", image_id, source, "all", reason))

        def note(column: str, reason: str, image_id=image_id, source=source) -> None:
            excluded.append(exclusion("vindr", image_id, source, f"field:{column}", reason))

        unsafe = [f"{name} {value!r} {id_problem(value)}" for name, value in (("image_id", image_id), ("study_id", study))
                  if id_problem(value)]
        if unsafe:
            drop(f"{' and '.join(unsafe)}: it names the DICOM's folder and file (images/<study_id>/<image_id>.dicom)")
            continue
        if image_id in seen:
            drop("duplicate image id")
            continue
        seen.add(image_id)
        laterality = (row.laterality or "").strip()
        if laterality not in ("L", "R"):
            drop(f"laterality is {row.laterality!r}, not L or R")
            continue
        split = SPLIT.get((row.split or "").strip())
        if split is None:
            drop(f"split is {row.split!r}, not training or test")
            continue
        birads = BIRADS.get((row.breast_birads or "").strip())
        if birads is None:
            note("breast_birads", f"breast_birads is {row.breast_birads!r}, not BI-RADS 1 to 5; left empty")
        density = DENSITY.get((row.breast_density or "").strip())
        if density is None:
            note("breast_density", f"breast_density is {row.breast_density!r}, not DENSITY A to D; left empty")
        info = meta.get(image_id)
        if info is None:
            note("metadata", f"no {metadata} row for this image; age and manufacturer left empty")
            info = {"age": "", "age_text": "", "manufacturer": "", "model": ""}
        elif info["age_text"] and not info["age"]:
            note("Patient's Age", f"Patient's Age is {info['age_text']!r}, not a number of years; left empty")
        breast = f"{study}_{laterality}"
        categories = found.get(breast, set())
        records.append({
            "dataset": "vindr", "image_id": image_id, "patient_id": study, "exam_id": study, "breast_id": breast,
            "laterality": laterality, "view": (row.view_position or "").strip(),
            "dicom_path": f"{images}/{study}/{image_id}.dicom", "density": density, "birads": birads, "cancer": None,
            **{task: int(name in categories) for task, name in FINDING_TASKS.items()},
            "age": info["age"], "manufacturer": info["manufacturer"], "machine_model": info["model"],
            "release_split": split,
        })
    return pd.DataFrame(records, columns=RECORD_COLUMNS), pd.DataFrame(excluded, columns=EXCLUSION_COLUMNS)
