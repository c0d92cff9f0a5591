import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark.data.dicom_io import stable_uid, write_mammogram
from benchmark.data.preprocess import PreprocessSettings, preprocess
from benchmark.data.rsna import load_rsna


def _phantom(rows=200, cols=160):
    """A bright half-ellipse 'breast' on a dark background, with a brighter blob."""
    y, x = np.mgrid[0:rows, 0:cols]
    breast = ((x / 110.0) ** 2 + ((y - 100) / 80.0) ** 2) < 1
    image = breast * 1500.0 + (((x - 40) ** 2 + (y - 90) ** 2) < 100) * 1000.0 + 50
    return image.astype(np.uint16)


def _write(path, stored, photometric="MONOCHROME2"):
    write_mammogram(path, stored, bits_stored=12, patient_id="1", study_uid=stable_uid("s"),
                    series_uid=stable_uid("se"), sop_uid=stable_uid(path.name), laterality="L", view="CC",
                    photometric=photometric)


def _records(rows):
    return pd.DataFrame([{"dataset": "t", "image_id": img, "dicom_path": rel, "laterality": "L"} for img, rel in rows])


def test_monochrome1_comes_out_like_monochrome2(tmp_path):
    stored = _phantom()
    _write(tmp_path / "m2.dcm", stored)
    _write(tmp_path / "m1.dcm", (4095 - stored).astype(np.uint16), photometric="MONOCHROME1")
    manifest, excluded = preprocess(_records([("m2", "m2.dcm"), ("m1", "m1.dcm")]), tmp_path, tmp_path / "cache",
                                    PreprocessSettings(long_side=64))
    assert excluded.empty and len(manifest) == 2
    m2 = np.asarray(Image.open(tmp_path / "cache/images/m2.png"))
    m1 = np.asarray(Image.open(tmp_path / "cache/images/m1.png"))
    np.testing.assert_array_equal(m1, m2)
    assert m1.shape[0] == 64 or m1.shape[1] == 64  # long side resized
    assert m1[0, -1] < 20 and m1[m1.shape[0] // 2, 2] > 100  # dark background, bright tissue


def test_crop_removes_empty_background(tmp_path):
    stored = np.zeros((200, 300), np.uint16)
    stored[50:150, 0:100] = 2000
    _write(tmp_path / "a.dcm", stored)
    preprocess(_records([("a", "a.dcm")]), tmp_path, tmp_path / "cache", PreprocessSettings(long_side=100))
    png = np.asarray(Image.open(tmp_path / "cache/images/a.png"))
    assert png.shape[1] <= 0.5 * 300 * (100 / 100) + 10  # columns beyond the breast are gone


def test_bad_files_become_exclusions_with_reasons(tmp_path):
    _write(tmp_path / "good.dcm", _phantom())
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "corrupt.dcm").write_bytes(b"not a dicom at all" * 20)
    good = (tmp_path / "good.dcm").read_bytes()
    (tmp_path / "truncated.dcm").write_bytes(good[: len(good) // 2])
    records = _records([("good", "good.dcm"), ("empty", "empty.dcm"), ("corrupt", "corrupt.dcm"),
                        ("truncated", "truncated.dcm"), ("missing", "missing.dcm"), ("escape", "../x.dcm")])
    manifest, excluded = preprocess(records, tmp_path, tmp_path / "cache", PreprocessSettings(long_side=32))
    assert manifest["image_id"].tolist() == ["good"]
    reasons = dict(zip(excluded.image_id, excluded.reason))
    assert reasons["empty"] == "zero-byte DICOM file"
    assert reasons["missing"] == "DICOM file not found"
    assert reasons["escape"] == "path escapes the data root"
    assert reasons["corrupt"] == "not a DICOM file (no DICM header)"
    assert reasons["truncated"].startswith(("pixel data holds", "truncated or unreadable file")), reasons["truncated"]
    assert len(manifest) + len(excluded) == len(records)


def test_rerun_skips_cached_and_other_settings_recompute(tmp_path):
    _write(tmp_path / "a.dcm", _phantom())
    cache = tmp_path / "cache"
    preprocess(_records([("a", "a.dcm")]), tmp_path, cache, PreprocessSettings(long_side=32))
    png = cache / "images/a.png"
    stamp = png.stat().st_mtime_ns
    preprocess(_records([("a", "a.dcm")]), tmp_path, cache, PreprocessSettings(long_side=32))
    assert png.stat().st_mtime_ns == stamp
    preprocess(_records([("a", "a.dcm")]), tmp_path, cache, PreprocessSettings(long_side=48))
    assert max(Image.open(png).size) == 48


def test_a_dicom_replaced_under_the_same_id_is_converted_again(tmp_path):
    """The cache once kept a PNG whatever happened to its DICOM: a new synthetic data version
    reused image ids, and 28 of the RSNA cache's 1,227 images stayed the old version's."""
    _write(tmp_path / "a.dcm", _phantom())
    cache = tmp_path / "cache"
    preprocess(_records([("a", "a.dcm")]), tmp_path, cache, PreprocessSettings(long_side=32))
    before = np.asarray(Image.open(cache / "images/a.png"))
    _write(tmp_path / "a.dcm", _phantom()[:, ::-1].copy())  # the breast on the other side
    preprocess(_records([("a", "a.dcm")]), tmp_path, cache, PreprocessSettings(long_side=32))
    preprocess(_records([("a", "a.dcm")]), tmp_path, tmp_path / "fresh", PreprocessSettings(long_side=32))
    after = np.asarray(Image.open(cache / "images/a.png"))
    assert after.shape != before.shape or (after != before).any()
    np.testing.assert_array_equal(after, np.asarray(Image.open(tmp_path / "fresh/images/a.png")))


@pytest.mark.parametrize("workers", [1, 2])
def test_synthetic_rsna_preprocesses_fully(rsna_root, tmp_path, workers):
    records, excluded = load_rsna(rsna_root)
    manifest, failed = preprocess(records, rsna_root, tmp_path / "cache", PreprocessSettings(long_side=64),
                                  workers=workers)
    assert excluded.empty and failed.empty and len(manifest) == len(records)
    assert manifest["breast_id"].str.fullmatch(r"\d+_[LR]").all()


def _pydicom_file(name):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return path


@pytest.mark.parametrize("compressed", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                        "MR_small_jp2klossless.dcm"])
def test_compressed_pydicom_files_match_their_uncompressed_original(tmp_path, compressed):
    """RLE, JPEG-LS and JPEG 2000 decode through pydicom's plugins to the same PNG."""
    import shutil

    shutil.copy(_pydicom_file("MR_small.dcm"), tmp_path / "plain.dcm")
    shutil.copy(_pydicom_file(compressed), tmp_path / "packed.dcm")
    manifest, excluded = preprocess(_records([("plain", "plain.dcm"), ("packed", "packed.dcm")]), tmp_path,
                                    tmp_path / "cache", PreprocessSettings(long_side=32, crop=False))
    assert excluded.empty, excluded.reason.tolist()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cache/images/plain.png")),
                                  np.asarray(Image.open(tmp_path / "cache/images/packed.png")))


@pytest.mark.parametrize("codec", ["j2k_lossless", "rle"])
def test_lossless_copy_gives_identical_png(tmp_path, codec):
    stored = _phantom() + np.random.default_rng(0).integers(0, 40, size=(200, 160)).astype(np.uint16)
    _write(tmp_path / "plain.dcm", stored)
    write_mammogram(tmp_path / "packed.dcm", stored, bits_stored=12, patient_id="1", study_uid=stable_uid("s"),
                    series_uid=stable_uid("se"), sop_uid=stable_uid("p"), laterality="L", view="CC",
                    transfer_syntax=codec)
    preprocess(_records([("plain", "plain.dcm"), ("packed", "packed.dcm")]), tmp_path, tmp_path / "cache",
               PreprocessSettings(long_side=64))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cache/images/plain.png")),
                                  np.asarray(Image.open(tmp_path / "cache/images/packed.png")))


def test_lossy_jpeg2000_decodes_close_to_original(tmp_path):
    stored = _phantom()
    _write(tmp_path / "plain.dcm", stored)
    write_mammogram(tmp_path / "lossy.dcm", stored, bits_stored=12, patient_id="1", study_uid=stable_uid("s"),
                    series_uid=stable_uid("se"), sop_uid=stable_uid("l"), laterality="L", view="CC",
                    transfer_syntax="j2k_lossy")
    preprocess(_records([("plain", "plain.dcm"), ("lossy", "lossy.dcm")]), tmp_path, tmp_path / "cache",
               PreprocessSettings(long_side=64))
    a = np.asarray(Image.open(tmp_path / "cache/images/plain.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "cache/images/lossy.png")).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 3


def test_voi_window_is_applied_when_asked(tmp_path):
    stored = _phantom()
    write_mammogram(tmp_path / "w.dcm", stored, bits_stored=12, patient_id="1", study_uid=stable_uid("s"),
                    series_uid=stable_uid("se"), sop_uid=stable_uid("w"), laterality="L", view="CC",
                    window=(1550, 100))  # a narrow window on the breast tissue level
    for voi in (False, True):
        preprocess(_records([("w", "w.dcm")]), tmp_path, tmp_path / f"cache{voi}", PreprocessSettings(long_side=64,
                   voi_lut=voi))
    plain = np.asarray(Image.open(tmp_path / "cacheFalse/images/w.png"))
    windowed = np.asarray(Image.open(tmp_path / "cacheTrue/images/w.png"))
    # tissue (1550) sits at the window centre: mid-grey; without the window it is 1500/2500 of the range
    assert abs(np.median(windowed[windowed > 20]) - 128) <= 3
    assert abs(np.median(plain[plain > 20]) - 153) <= 3


def test_flip_to_left_mirrors_right_breasts(tmp_path):
    stored = np.zeros((100, 200), np.uint16)
    stored[20:80, 100:200] = 2000  # chest wall on the right
    stored[40:60, 150:170] = 3000
    _write(tmp_path / "r.dcm", stored)
    recs = _records([("r", "r.dcm")]).assign(laterality="R")
    preprocess(recs, tmp_path, tmp_path / "a", PreprocessSettings(long_side=64, crop=False))
    preprocess(recs, tmp_path, tmp_path / "b", PreprocessSettings(long_side=64, crop=False, flip_to_left=True))
    a = np.asarray(Image.open(tmp_path / "a/images/r.png"))
    b = np.asarray(Image.open(tmp_path / "b/images/r.png"))
    np.testing.assert_array_equal(a[:, ::-1], b)


def test_output_bytes_do_not_depend_on_worker_count(rsna_root, tmp_path):
    records, _ = load_rsna(rsna_root)
    for workers in (1, 2):
        preprocess(records, rsna_root, tmp_path / f"w{workers}", PreprocessSettings(long_side=48), workers=workers)
    for png in sorted((tmp_path / "w1/images").glob("*.png")):
        assert png.read_bytes() == (tmp_path / "w2/images" / png.name).read_bytes()
