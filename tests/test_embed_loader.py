import pandas as pd
import pytest

from benchmark.data.embed import combine_birads, load_embed
from benchmark.data.synth import EMBED_PATH_PREFIX
from benchmark.errors import BenchmarkError

PREFIX = {EMBED_PATH_PREFIX: "images/"}


@pytest.mark.parametrize("values, expected", [
    ([1], 1), ([1, 2], 2), ([0, 1], 0), ([0, 2], 0), ([0, 4], 4), ([2, 5, 1], 5), ([3, 0], 3), ([6], 6),
])
def test_worst_assessment_rule(values, expected):
    assert combine_birads(values) == expected


def test_synthetic_tables_load_with_sides_joined(embed_root):
    records, excluded = load_embed(embed_root, "EMBED_OpenData_metadata.csv", "EMBED_OpenData_clinical.csv", PREFIX)
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str)
    clin = pd.read_csv(embed_root / "EMBED_OpenData_clinical.csv", dtype=str)
    kept = meta[(meta.FinalImageType == "2D") & meta.spot_mag.isna()]
    assert len(records) == len(kept)
    assert len(records) + (excluded.scope == "all").sum() == len(meta)
    assert records["patient_id"].str.fullmatch(r"\d{8}").all()
    # an image's BI-RADS comes from the finding rows of its own side (or B / empty)
    for rec in records.head(40).itertuples():
        rows = clin[clin.acc_anon == rec.exam_id]
        rows = rows[(rows.side == rec.laterality) | rows.side.isin(["B"]) | rows.side.isna()]
        letters = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
        if "X" in set(rows.asses):
            assert pd.isna(rec.birads)
        else:
            assert rec.birads == combine_birads([letters[a] for a in rows.asses])


def test_filters_and_task_exclusions_are_recorded(embed_root, tmp_path):
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str)
    clin = pd.read_csv(embed_root / "EMBED_OpenData_clinical.csv", dtype=str)
    meta.loc[0, "FinalImageType"] = "cview"
    meta.loc[1, "spot_mag"] = "1.0"
    meta.loc[2, "anon_dicom_path"] = "/elsewhere/x.dcm"
    acc = meta.loc[5, "acc_anon"]
    clin.loc[clin.acc_anon == acc, "asses"] = "X"
    clin.loc[clin.acc_anon == acc, "tissueden"] = "5.0"
    meta.to_csv(tmp_path / "meta.csv", index=False)
    clin.to_csv(tmp_path / "clin.csv", index=False)
    records, excluded = load_embed(tmp_path, "meta.csv", "clin.csv", PREFIX)
    dropped = excluded[excluded.scope == "all"]
    assert len(records) + len(dropped) == len(meta)  # nothing lost silently
    reasons = " | ".join(dropped.reason)
    assert "cview" in reasons and "spot" in reasons and "prefix" in reasons
    exam = records[records.exam_id == acc]
    assert exam["birads"].isna().all() and exam["density"].isna().all()
    assert {"task:birads", "task:density"} <= set(excluded.scope)


def test_missing_column_is_one_line_error_naming_it(embed_root, tmp_path):
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str).drop(columns=["ViewPosition"])
    meta.to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(BenchmarkError, match=r"meta.csv: table is missing column\(s\) ViewPosition"):
        load_embed(embed_root, str(tmp_path / "meta.csv"), "EMBED_OpenData_clinical.csv", PREFIX)


def test_reduced_tables_and_other_race_column_work(embed_root, tmp_path):
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str)
    clin = pd.read_csv(embed_root / "EMBED_OpenData_clinical.csv", dtype=str)
    meta.drop(columns=["StudyDescription", "SeriesDescription", "num_roi", "ROI_coords", "Manufacturer"]).to_csv(
        tmp_path / "meta_reduced.csv", index=False)
    clin.rename(columns={"RACE_DESC": "ETHNICITY_DESC"}).drop(columns=["massdens"]).to_csv(
        tmp_path / "clin_reduced.csv", index=False)
    full, _ = load_embed(embed_root, "EMBED_OpenData_metadata.csv", "EMBED_OpenData_clinical.csv", PREFIX)
    reduced, _ = load_embed(tmp_path, "meta_reduced.csv", "clin_reduced.csv", PREFIX)
    pd.testing.assert_series_equal(full["birads"], reduced["birads"])
    assert (reduced["study_description"] != "").all()  # clinical desc stands in
    assert (reduced["race"] == full["race"]).all()


def test_duplicate_image_and_unknown_code_are_recorded(embed_root, tmp_path):
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str)
    clin = pd.read_csv(embed_root / "EMBED_OpenData_clinical.csv", dtype=str)
    meta = pd.concat([meta, meta.iloc[[3]]], ignore_index=True)
    acc = meta.loc[8, "acc_anon"]
    clin.loc[clin.acc_anon == acc, "asses"] = "Q"
    meta.to_csv(tmp_path / "meta.csv", index=False)
    clin.to_csv(tmp_path / "clin.csv", index=False)
    records, excluded = load_embed(tmp_path, "meta.csv", "clin.csv", PREFIX)
    dup = excluded[excluded.reason == "duplicate image id"]
    assert len(dup) == 1 and dup.source.iloc[0] == f"meta.csv:row {len(meta) + 1}"
    assert excluded[excluded.reason.str.contains("unknown asses code")].scope.eq("task:birads").all()
    assert records[records.exam_id == acc].birads.isna().all()
    assert len(records) + (excluded.scope == "all").sum() == len(meta)
