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


def _exclusions(rows: pd.DataFrame | pd.Index, source: pd.Series, scope: str, reasons) -> pd.DataFrame:
    """Exclusion rows (``EXCLUSION_COLUMNS``) for images ``rows`` (a frame with image_id, or
    an index of image ids), with the table row each came from."""
    ids = rows["image_id"] if isinstance(rows, pd.DataFrame) else rows
    return pd.DataFrame({"dataset": "embed", "image_id": ids, "source": source.reindex(ids).values,
                         "scope": scope, "reason": reasons})


def _usable_images(meta: pd.DataFrame, clinical_exams: set) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """The metadata rows of 2D, non-spot images with a remapped path and a clinical row,
    and an exclusion frame per filter, in the order they apply."""
    filters = [
        (lambda m: m["image_id"].duplicated(), lambda r: "duplicate image id"),
        (lambda m: _text(m["FinalImageType"]) != "2D",
         lambda r: "FinalImageType is " + _text(r["FinalImageType"]).replace("", "empty") + ", not 2D"),
        (lambda m: _text(m["spot_mag"]).isin(["1", "1.0"]), lambda r: "spot compression or magnification view"),
        (lambda m: m["relative"].isna(),
         lambda r: "anon_dicom_path does not start with a configured prefix: " + r["anon_dicom_path"].astype(str)),
        (lambda m: ~m["acc_anon"].isin(clinical_exams), lambda r: "no clinical row for acc_anon"),
    ]
    excluded = []
    for dropped, reason in filters:
        mask = dropped(meta)
        rows = meta[mask]
        excluded.append(pd.DataFrame({"dataset": "embed", "image_id": rows["image_id"], "source": rows["_source"],
                                      "scope": "all", "reason": reason(rows)}))
        meta = meta[~mask]
    return meta, excluded


def _findings_of_images(meta: pd.DataFrame, clin: pd.DataFrame) -> pd.DataFrame:
    """Clinical rows joined to the images they apply to (same exam; the image's side, or B, or empty)."""
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
    return joined[(joined["fside"] == joined["side"]) | joined["fside"].isin(["B", ""])]


def _birads_of_images(joined: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(BI-RADS per image, NaN where unusable; the unknown-code reason per image; whether an
    image has an X (no assessment) row)."""
    image_of_row = joined["image_id"]
    unknown = joined[joined["value"].isna() & (joined["asses"] != "X")]
    unknown_codes = unknown.groupby("image_id")["asses"].agg(_asses_reason)
    has_x = joined["asses"].eq("X").groupby(image_of_row, sort=False).any()
    worst_value = joined["value"].groupby(image_of_row, sort=False).max()
    any_zero = joined["value"].eq(0).groupby(image_of_row, sort=False).any()
    birads = worst_value.where(~((worst_value <= 2) & any_zero), 0)
    birads[has_x] = np.nan
    birads[birads.index.isin(unknown_codes.index)] = np.nan
    return birads, unknown_codes, has_x


def _caption_rows(joined: pd.DataFrame, birads: pd.Series) -> pd.DataFrame:
    """Per image, the finding row that sets its BI-RADS (first in table order), else its
    first row: the caption fields come from it."""
    joined = joined.assign(birads=joined["image_id"].map(birads))
    setting = joined[joined["value"] == joined["birads"]].sort_values("_order").drop_duplicates("image_id")
    first = joined.sort_values("_order").drop_duplicates("image_id").set_index("image_id")
    return setting.set_index("image_id").reindex(first.index).combine_first(first)


def _density_of_images(joined: pd.DataFrame, ids: pd.Index, source: pd.Series) -> tuple[pd.Series, list]:
    """Density 1 to 4 per image (the first non-empty tissueden of its findings) and the
    task exclusions of the others."""
    raw_density = _text(joined["tissueden"]).replace("", pd.NA).groupby(joined["image_id"]).first().reindex(ids)
    density = pd.to_numeric(raw_density, errors="coerce")
    not_number = density.isna() & raw_density.notna()
    bad_density = density.notna() & ~density.isin([1, 2, 3, 4, 5])
    excluded = [
        _exclusions(ids[raw_density.isna()], source, "task:density", "tissueden missing"),
        _exclusions(ids[not_number], source, "task:density",
                    "tissueden is '" + raw_density[not_number].astype(str) + "', not a number 1 to 5"),
        _exclusions(ids[density == 5], source, "task:density", "tissueden 5 (normal male)"),
        _exclusions(ids[bad_density], source, "task:density", "unknown tissueden " + density[bad_density].astype(str)),
    ]
    return density.where(density.isin([1, 2, 3, 4])), excluded


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
    meta, excluded = _usable_images(meta, set(clin["acc_anon"]))
    joined = _findings_of_images(meta, clin)
    no_finding = ~meta["image_id"].isin(set(joined["image_id"]))
    excluded.append(_exclusions(meta[no_finding], meta.set_index("image_id")["_source"], "all",
                                "no finding row for side " + meta.loc[no_finding, "side"]))
    meta = meta[~no_finding].set_index("image_id", drop=False)
    ids, source = meta.index, meta["_source"]

    birads, unknown_codes, has_x = _birads_of_images(joined)
    excluded.append(_exclusions(unknown_codes.index, source, "task:birads", unknown_codes.values))
    x_only = has_x.index[has_x & ~has_x.index.isin(unknown_codes.index)]
    excluded.append(_exclusions(x_only, source, "task:birads", "asses X (no assessment)"))
    density, density_excluded = _density_of_images(joined, ids, source)
    excluded += density_excluded

    row = _caption_rows(joined, birads).reindex(ids)
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
        # for subgroups; an optional column of the metadata table (the DICOM header's Manufacturer)
        "manufacturer": _text(meta["Manufacturer"]) if "Manufacturer" in meta.columns else "",
    }).reset_index(drop=True)
    exclusions = pd.concat(excluded, ignore_index=True).reindex(columns=EXCLUSION_COLUMNS)
    return records, exclusions
