"""EMBED tables to manifest records: join, filters, BI-RADS rule (docs/protocol.md, Data).

One metadata row is one DICOM. Findings (clinical rows) join on ``acc_anon``; an image
takes the rows whose ``side`` equals its laterality, or is ``B`` or empty. Its BI-RADS
is the worst assessment, except that 0 wins when every assessment is at most 2.
The join is vectorised (pandas merges), so the full 480k-row table takes seconds.
The ``_reduced`` table variants work too: columns they lack are optional here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.tables import EXCLUSION_COLUMNS, read_table

META_REQUIRED = ["empi_anon", "acc_anon", "anon_dicom_path", "ImageLateralityFinal", "ViewPosition",
                 "FinalImageType", "spot_mag"]
META_OPTIONAL = ["StudyDescription"]  # absent from some reduced tables; clinical `desc` stands in
CLIN_REQUIRED = ["empi_anon", "acc_anon", "desc", "side", "asses", "tissueden", "age_at_study"]
ID_COLUMNS = ["empi_anon", "acc_anon"]
ASSES_TO_BIRADS = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
FINDING_COLUMNS = ["massshape", "massmargin", "massdens", "calcfind", "calcdistri"]
RACE_COLUMNS = ["RACE_DESC", "ETHNICITY_DESC"]  # the name differs between table versions
TEXT_COLUMNS = ["desc", "age_at_study", "race", "ETHNIC_GROUP_DESC", *FINDING_COLUMNS]


def combine_birads(values: list[int]) -> int:
    """The image's BI-RADS from all findings that apply to it."""
    if max(values) <= 2 and 0 in values:
        return 0
    return max(values)


def _text(series: pd.Series) -> pd.Series:
    """Strings with missing values as '' and runs of spaces collapsed (free text has double spaces)."""
    return series.astype("string").fillna("").str.split().str.join(" ").astype(object)


def _asses_reason(codes: pd.Series) -> str:
    """Why an image's assessment is unusable, saying what the cells held."""
    values = sorted(set(codes))
    parts = ["asses empty" if v == "" else f"unknown asses code {v!r}" for v in values]
    return "; ".join(parts)


def _reason(desc: pd.Series) -> pd.Series:
    out = np.where(desc.str.lower().str.contains("screen"), "screening", "diagnostic")
    return pd.Series(np.where(desc == "", "", out), index=desc.index)


def _remap(paths: pd.Series, prefixes: dict[str, str]) -> pd.Series:
    out = pd.Series(pd.NA, index=paths.index, dtype=object)
    for old, new in prefixes.items():
        hit = out.isna() & paths.str.startswith(old)
        out[hit] = new + paths[hit].str.slice(len(old))
    return out


def load_embed(root: Path, metadata: str, clinical: str, path_prefix: dict[str, str]):
    """Return (records, exclusions) as DataFrames; records follow ``MANIFEST_COLUMNS``."""
    root = Path(root)
    meta = read_table(root / metadata, META_REQUIRED, ID_COLUMNS)
    clin = read_table(root / clinical, CLIN_REQUIRED, ID_COLUMNS)
    meta = meta.assign(
        _source=[f"{metadata}:row {i + 2}" for i in range(len(meta))],  # the header is line 1
        image_id=meta["anon_dicom_path"].astype(str).str.rsplit("/", n=1).str[-1].str.removesuffix(".dcm"),
        side=_text(meta["ImageLateralityFinal"]),
        relative=_remap(meta["anon_dicom_path"].astype(str), path_prefix),
    )
    excluded = []

    def drop(mask: pd.Series, reason, scope: str = "all") -> None:
        nonlocal meta
        rows = meta[mask]
        reasons = reason(rows) if callable(reason) else reason
        excluded.append(pd.DataFrame({"dataset": "embed", "image_id": rows["image_id"], "source": rows["_source"],
                                      "scope": scope, "reason": reasons}))
        meta = meta[~mask]

    drop(meta["image_id"].duplicated(), "duplicate image id")
    image_type = _text(meta["FinalImageType"])
    drop(image_type != "2D", lambda r: "FinalImageType is " + _text(r["FinalImageType"]).replace("", "empty")
         + ", not 2D")
    drop(_text(meta["spot_mag"]).isin(["1", "1.0"]), "spot compression or magnification view")
    drop(meta["relative"].isna(), lambda r: "anon_dicom_path does not start with a configured prefix: "
         + r["anon_dicom_path"].astype(str))
    drop(~meta["acc_anon"].isin(set(clin["acc_anon"])), "no clinical row for acc_anon")

    race_col = next((c for c in RACE_COLUMNS if c in clin.columns), None)
    findings = clin.assign(
        _order=np.arange(len(clin)),
        fside=_text(clin["side"]),
        asses=_text(clin["asses"]),
        race=_text(clin[race_col]) if race_col else "",
        **{c: _text(clin[c]) if c in clin.columns else "" for c in TEXT_COLUMNS if c != "race"},
    )
    findings["value"] = findings["asses"].map(ASSES_TO_BIRADS)
    joined = meta[["image_id", "acc_anon", "side"]].merge(
        findings[["acc_anon", "fside", "asses", "value", "tissueden", "_order", *TEXT_COLUMNS]],
        on="acc_anon", how="inner")
    joined = joined[(joined["fside"] == joined["side"]) | joined["fside"].isin(["B", ""])]
    drop(~meta["image_id"].isin(set(joined["image_id"])), lambda r: "no finding row for side " + r["side"])

    image_of_row = joined["image_id"]
    unknown = joined[joined["value"].isna() & (joined["asses"] != "X")]
    unknown_codes = unknown.groupby("image_id")["asses"].agg(_asses_reason)
    has_x = joined["asses"].eq("X").groupby(image_of_row, sort=False).any()
    worst_value = joined["value"].groupby(image_of_row, sort=False).max()
    any_zero = joined["value"].eq(0).groupby(image_of_row, sort=False).any()
    birads = worst_value.where(~((worst_value <= 2) & any_zero), 0)
    birads[has_x] = np.nan
    birads[birads.index.isin(unknown_codes.index)] = np.nan
    # the finding row that sets the BI-RADS (first in table order) supplies the caption fields
    joined["birads"] = joined["image_id"].map(birads)
    setting = joined[joined["value"] == joined["birads"]].sort_values("_order").drop_duplicates("image_id")
    first = joined.sort_values("_order").drop_duplicates("image_id").set_index("image_id")
    source_row = setting.set_index("image_id").reindex(first.index).combine_first(first)
    # the first non-empty tissueden cell of the image's findings, as text and as a number
    raw_density = _text(joined["tissueden"]).replace("", pd.NA).groupby(joined["image_id"]).first()
    density = pd.to_numeric(raw_density, errors="coerce")

    meta = meta.set_index("image_id", drop=False)
    ids = meta.index
    source = meta["_source"]

    def task_exclusion(index, scope, reasons):
        excluded.append(pd.DataFrame({"dataset": "embed", "image_id": index, "source": source.reindex(index).values,
                                      "scope": scope, "reason": reasons}))

    task_exclusion(unknown_codes.index, "task:birads", unknown_codes.values)
    x_only = has_x.index[has_x & ~has_x.index.isin(unknown_codes.index)]
    task_exclusion(x_only, "task:birads", "asses X (no assessment)")
    density, raw_density = density.reindex(ids), raw_density.reindex(ids)
    task_exclusion(ids[raw_density.isna()], "task:density", "tissueden missing")
    not_number = density.isna() & raw_density.notna()
    task_exclusion(ids[not_number], "task:density",
                   "tissueden is '" + raw_density[not_number].astype(str) + "', not a number 1 to 5")
    task_exclusion(ids[density == 5], "task:density", "tissueden 5 (normal male)")
    bad_density = density.notna() & ~density.isin([1, 2, 3, 4, 5])
    task_exclusion(ids[bad_density], "task:density", "unknown tissueden " + density[bad_density].astype(str))
    density = density.where(density.isin([1, 2, 3, 4]))

    row = source_row.reindex(ids)
    study = _text(meta["StudyDescription"]) if "StudyDescription" in meta.columns else pd.Series("", index=ids)
    study = study.where(study != "", row["desc"])
    records = pd.DataFrame({
        "dataset": "embed", "image_id": ids, "patient_id": meta["empi_anon"].astype(str),
        "exam_id": meta["acc_anon"].astype(str), "breast_id": meta["acc_anon"].astype(str) + "_" + meta["side"],
        "laterality": meta["side"], "view": _text(meta["ViewPosition"]), "dicom_path": meta["relative"],
        "density": density.astype("Int64"), "birads": birads.reindex(ids).astype("Int64"), "cancer": pd.NA,
        "study_description": study, "reason": _reason(row["desc"].where(row["desc"] != "", study)),
        "age": row["age_at_study"], "race": row["race"], "ethnicity": row["ETHNIC_GROUP_DESC"],
        "image_type": _text(meta["FinalImageType"]), **{c: row[c] for c in FINDING_COLUMNS},
    }).reset_index(drop=True)
    exclusions = pd.concat(excluded, ignore_index=True).reindex(columns=EXCLUSION_COLUMNS)
    return records, exclusions
