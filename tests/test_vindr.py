"""VinDr-Mammo: the synthetic release in the real layout and codes, its loader (labels per
breast from the finding boxes, studies as patients, bad cells recorded), and the split that
keeps the release's test studies."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.data.split import make_split
from benchmark.data.synth import write_vindr
from benchmark.data.vindr import load_vindr
from benchmark.errors import BenchmarkError

BREAST_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                  "breast_birads", "breast_density", "split"]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vindr")
    write_vindr(root, 40, seed=3, shape=(128, 104))
    return root


def test_synthetic_release_has_the_real_layout_and_codes(release):
    breast = pd.read_csv(release / "breast-level_annotations.csv", dtype=str)
    assert list(breast.columns) == BREAST_COLUMNS
    assert set(breast.breast_birads) <= {f"BI-RADS {k}" for k in range(1, 6)}
    assert set(breast.breast_density) <= {f"DENSITY {x}" for x in "ABCD"}
    assert set(breast.split) == {"training", "test"} and (breast.groupby("study_id").size() == 4).all()
    findings = pd.read_csv(release / "finding_annotations.csv", dtype=str, keep_default_na=False)
    assert {"finding_categories", "finding_birads", "xmin", "ymax"} <= set(findings.columns)
    assert "['No Finding']" in set(findings.finding_categories)
    assert set(findings.image_id) == set(breast.image_id)  # every image has a row, with or without a box
    metadata = pd.read_csv(release / "metadata.csv", dtype=str)
    assert set(metadata["SOP Instance UID"]) == set(breast.image_id)
    assert metadata["Patient's Age"].dropna().str.fullmatch(r"\d{3}Y").all()
    for row in breast.head(4).itertuples():
        assert (release / "images" / row.study_id / f"{row.image_id}.dicom").is_file()


def test_loader_reads_breast_labels_and_takes_each_study_as_a_patient(release):
    records, excluded = load_vindr(release)
    breast = pd.read_csv(release / "breast-level_annotations.csv", dtype=str)
    assert len(records) == len(breast) and excluded.empty
    assert (records.patient_id == records.exam_id).all()
    assert records.groupby("patient_id").breast_id.nunique().eq(2).all()
    merged = records.merge(breast, on="image_id")
    assert (merged.birads == merged.breast_birads.str[-1].astype(int)).all()
    assert (merged.density == merged.breast_density.str[-1].map({"A": 1, "B": 2, "C": 3, "D": 4})).all()
    assert (merged.release_split == merged.split.map({"training": "train", "test": "test"})).all()
    # a breast is positive when a box on either of its views names the finding
    findings = pd.read_csv(release / "finding_annotations.csv", dtype=str, keep_default_na=False)
    boxed = findings.assign(breast=findings.study_id + "_" + findings.laterality)
    mass_breasts = set(boxed.breast[boxed.finding_categories.str.contains("'Mass'")])
    calc_breasts = set(boxed.breast[boxed.finding_categories.str.contains("Suspicious Calcification")])
    assert set(records.breast_id[records.mass == 1]) == mass_breasts and mass_breasts
    assert set(records.breast_id[records.calcification == 1]) == calc_breasts and calc_breasts
    assert records.groupby("breast_id")[["mass", "calcification", "birads"]].nunique().eq(1).all().all()
    assert set(records.manufacturer) <= {"SIEMENS", "IMS s.r.l.", "Planmed"} and records.age.ne("").any()


def test_bad_cells_are_excluded_or_recorded_with_their_row(release, tmp_path):
    for name in ("finding_annotations.csv", "images"):
        (tmp_path / name).symlink_to(release / name)
    breast = pd.read_csv(release / "breast-level_annotations.csv", dtype=str)
    breast.loc[0, "laterality"] = "X"
    breast.loc[1, "breast_birads"] = "BI-RADS 6"
    breast.loc[2, "split"] = "validation"
    breast.to_csv(tmp_path / "breast-level_annotations.csv", index=False)
    metadata = pd.read_csv(release / "metadata.csv", dtype=str)
    metadata = metadata[metadata["SOP Instance UID"] != breast.image_id[3]]
    metadata.loc[metadata["SOP Instance UID"] == breast.image_id[4], "Patient's Age"] = "abcY"
    # the release's tag list spells the model column with a typographic apostrophe
    metadata.rename(columns={"Manufacturer's Model Name": "Manufacturer\u2019s Model Name"}).to_csv(
        tmp_path / "metadata.csv", index=False)
    records, excluded = load_vindr(tmp_path)
    by_source = excluded.set_index("source")
    assert by_source.loc["breast-level_annotations.csv:row 2", "scope"] == "all"
    assert "laterality is 'X'" in by_source.loc["breast-level_annotations.csv:row 2", "reason"]
    assert "split is 'validation'" in by_source.loc["breast-level_annotations.csv:row 4", "reason"]
    assert by_source.loc["breast-level_annotations.csv:row 3", "scope"] == "field:breast_birads"
    assert len(records) == len(breast) - 2
    assert np.isnan(records.set_index("image_id").loc[breast.image_id[1], "birads"])
    assert "field:metadata" in set(excluded.scope) and "field:Patient's Age" in set(excluded.scope)
    assert records.machine_model.eq("").sum() == 1  # read through either apostrophe; one image has no row


def test_unreadable_finding_rows_are_recorded_not_counted(release, tmp_path):
    for name in ("breast-level_annotations.csv", "metadata.csv", "images"):
        (tmp_path / name).symlink_to(release / name)
    findings = pd.read_csv(release / "finding_annotations.csv", dtype=str, keep_default_na=False)
    positive = findings.index[findings.finding_categories.str.contains("Mass")][0]
    findings.loc[positive, "finding_categories"] = "Mass"  # not a list
    stray = findings[findings.finding_categories == "['No Finding']"].iloc[[0]].assign(image_id="f" * 32)
    pd.concat([findings, stray]).to_csv(tmp_path / "finding_annotations.csv", index=False)
    records, excluded = load_vindr(tmp_path)
    assert set(excluded.scope) == {"field:finding_categories", "finding"}
    assert f"finding_annotations.csv:row {positive + 2}" in set(excluded.source)
    assert len(records) == len(pd.read_csv(release / "breast-level_annotations.csv"))


def test_split_keeps_the_release_test_studies_and_validates_on_training_ones(release):
    records, _ = load_vindr(release)
    table = make_split(records, "birads", 0, {"train": 0.7, "val": 0.1, "test": 0.2}, [0.1, 1.0], draws=2,
                       class_columns=("birads", "density", "mass", "calcification"))
    released = records.groupby("patient_id").release_split.first()
    split = table.set_index("patient_id").split
    assert (split[released == "test"] == "test").all() and (split[released == "train"] != "test").all()
    assert (split == "val").any() and (split == "train").sum() > (split == "val").sum()
    assert table.loc[table.split != "train", "frac_0.1"].eq(0).all()  # label fractions only from training
    mixed = records.copy()
    mixed.loc[mixed.patient_id == mixed.patient_id.iloc[0], "release_split"] = ["train", "test", "train", "train"]
    with pytest.raises(BenchmarkError, match="both the release's training and test splits"):
        make_split(mixed, "birads", 0, {"train": 0.7, "val": 0.1, "test": 0.2}, [1.0])
