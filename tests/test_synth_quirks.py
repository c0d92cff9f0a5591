"""The generator writes the quirks of real data, and the loaders handle every one."""

from pathlib import Path

import pandas as pd
import pydicom
import pytest

from benchmark.data.check import check_data
from benchmark.data.synth import EMBED_PATH_PREFIX, write_embed, write_rsna

EMBED_ENTRY = {"metadata": "EMBED_OpenData_metadata.csv", "clinical": "EMBED_OpenData_clinical.csv",
               "path_prefix": {EMBED_PATH_PREFIX: "images/"}}


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    root = tmp_path_factory.mktemp("quirks")
    write_embed(root / "embed", n_patients=160, seed=9, shape=(64, 52), workers=2)
    write_rsna(root / "rsna", n_patients=60, seed=9, shape=(64, 52), workers=2)
    return root


def _headers(folder: Path):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.rglob("*.dcm"))]


def test_embed_tables_carry_real_quirks(quirky):
    meta = pd.read_csv(quirky / "embed/EMBED_OpenData_metadata.csv", dtype=str)
    clin = pd.read_csv(quirky / "embed/EMBED_OpenData_clinical.csv", dtype=str)
    assert {"2D", "cview"} <= set(meta.FinalImageType)
    assert (meta.spot_mag == "1.0").any()
    assert {"L", "R", "B"} <= set(clin.side.dropna()) and clin.side.isna().any()
    assert (clin.asses == "X").any() and (clin.tissueden == "5.0").any()
    assert clin.RACE_DESC.isna().any() and clin.age_at_study.isna().any()
    assert "  " in " ".join(clin.RACE_DESC.dropna())  # the real tables' double spaces
    assert clin.groupby("acc_anon").size().max() >= 3  # several findings per exam
    assert {"Manufacturer", "cohort_num"} <= set(meta.columns)  # extra columns


def test_dicoms_vary_like_real_units(quirky):
    embed = _headers(quirky / "embed/images")
    rsna = _headers(quirky / "rsna/train_images")
    assert {12, 14, 16} <= {int(h.BitsStored) for h in embed}
    assert {"MONOCHROME1", "MONOCHROME2"} <= {h.PhotometricInterpretation for h in embed + rsna}
    assert any(float(h.RescaleIntercept) != 0 for h in embed)
    assert all("WindowCenter" in h for h in embed)
    syntaxes = {h.file_meta.TransferSyntaxUID.name for h in rsna}
    assert "JPEG 2000 Image Compression (Lossless Only)" in syntaxes and "Explicit VR Little Endian" in syntaxes


def test_check_data_counts_match_the_tables(quirky):
    report = check_data("embed", {"root": str(quirky / "embed"), **EMBED_ENTRY})
    meta = pd.read_csv(quirky / "embed/EMBED_OpenData_metadata.csv", dtype=str)
    kept = meta[(meta.FinalImageType == "2D") & meta.spot_mag.isna()]
    assert report["rows"] == len(meta)
    assert report["images_usable"] == len(kept)
    assert report["excluded_all"] == len(meta) - len(kept)
    reasons = {e["reason"] for e in report["exclusions"]}
    assert "FinalImageType is cview, not 2D" in reasons and "spot compression or magnification view" in reasons
    assert "asses X (no assessment)" in reasons and "tissueden 5 (normal male)" in reasons
    assert sum(report["tasks"]["density"]["classes"].values()) == report["tasks"]["density"]["images"]

    rsna = check_data("rsna", {"root": str(quirky / "rsna"), "table": "train.csv", "images": "train_images"})
    table = pd.read_csv(quirky / "rsna/train.csv")
    assert rsna["images_usable"] == len(table)
    assert rsna["tasks"]["cancer"]["classes"] == {"0": int((table.cancer == 0).sum()), "1": int(table.cancer.sum())}


def test_check_data_reports_missing_files(quirky, tmp_path):
    import shutil

    shutil.copytree(quirky / "rsna", tmp_path / "rsna")
    victim = next((tmp_path / "rsna/train_images").rglob("*.dcm"))
    victim.unlink()
    report = check_data("rsna", {"root": str(tmp_path / "rsna"), "table": "train.csv", "images": "train_images"})
    assert {"scope": "all", "reason": "DICOM file not found", "count": 1} in report["exclusions"]
