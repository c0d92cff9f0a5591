import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image

from benchmark.data.embed import CLIN_REQUIRED, META_REQUIRED
from benchmark.data.render import render_breast
from benchmark.data.rsna import REQUIRED as RSNA_REQUIRED
from benchmark.data.synth import EMBED_PATH_PREFIX, lesion_for_birads, write_embed, write_rsna


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_embed_tables_have_real_columns_and_id_shapes(embed_root):
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str)
    clin = pd.read_csv(embed_root / "EMBED_OpenData_clinical.csv", dtype=str)
    assert set(META_REQUIRED) <= set(meta.columns)
    assert set(CLIN_REQUIRED) | {"massshape", "calcfind", "path_severity", "RACE_DESC"} <= set(clin.columns)
    assert meta["empi_anon"].str.fullmatch(r"\d{8}").all()
    assert meta["acc_anon"].str.fullmatch(r"\d{16}").all()
    assert set(clin["asses"]) <= set("ANBPSMKX")
    assert meta["anon_dicom_path"].str.startswith(EMBED_PATH_PREFIX).all()


def test_every_exam_has_cc_and_mlo_of_both_breasts(embed_root):
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str)
    meta = meta[(meta.FinalImageType == "2D") & meta.spot_mag.isna()]
    views = meta.groupby("acc_anon").apply(lambda g: sorted(g.ImageLateralityFinal + g.ViewPosition))
    assert all(v == ["LCC", "LMLO", "RCC", "RMLO"] for v in views)


def test_embed_dicoms_exist_at_remapped_paths_and_decode(embed_root):
    meta = pd.read_csv(embed_root / "EMBED_OpenData_metadata.csv", dtype=str)
    for path in meta["anon_dicom_path"].head(8):
        ds = pydicom.dcmread(embed_root / "images" / path[len(EMBED_PATH_PREFIX):])
        assert ds.Modality == "MG" and ds.pixel_array.shape == (128, 104)
        assert ds.pixel_array.max() < 2**ds.BitsStored


def test_rsna_table_and_image_layout(rsna_root):
    table = pd.read_csv(rsna_root / "train.csv")
    assert list(table.columns) == RSNA_REQUIRED
    assert table["image_id"].is_unique
    assert set(table["cancer"]) <= {0, 1}
    # cancer is a per-breast label: both views of a breast agree
    assert (table.groupby(["patient_id", "laterality"])["cancer"].nunique() == 1).all()
    for row in table.head(4).itertuples():
        assert (rsna_root / "train_images" / str(row.patient_id) / f"{row.image_id}.dcm").is_file()


def test_rsna_biopsied_look_alikes_lie_on_either_side_and_are_negative(tmp_path):
    write_rsna(tmp_path, n_patients=150, seed=5, shape=(48, 40))
    table = pd.read_csv(tmp_path / "train.csv")
    look_alike = table[table["difficult_negative_case"] & (table["biopsy"] == 1)]
    assert set(look_alike["laterality"]) == {"L", "R"}  # not a side the cancer label could hide in
    assert (look_alike["cancer"] == 0).all()
    # one biopsied breast per difficult patient; the other breast is not biopsied
    assert (look_alike.groupby("patient_id")["laterality"].nunique() == 1).all()
    difficult = table[table["difficult_negative_case"]]
    assert set(difficult["patient_id"]) == set(look_alike["patient_id"])


def test_generation_is_deterministic_and_worker_independent(tmp_path):
    write_embed(tmp_path / "a", n_patients=6, seed=11, shape=(96, 80), workers=1)
    write_embed(tmp_path / "b", n_patients=6, seed=11, shape=(96, 80), workers=2)
    write_embed(tmp_path / "c", n_patients=6, seed=12, shape=(96, 80), workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_compressed_dicoms_keep_their_stable_uids_and_reruns_are_identical(tmp_path):
    # pydicom's compress() draws a random SOP Instance UID unless told not to
    write_rsna(tmp_path / "a", n_patients=12, seed=3, shape=(96, 80))
    write_rsna(tmp_path / "b", n_patients=12, seed=3, shape=(96, 80))
    compressed = [ds for ds in map(pydicom.dcmread, sorted((tmp_path / "a").rglob("*.dcm")))
                  if ds.file_meta.TransferSyntaxUID.is_compressed]
    assert compressed
    assert all(ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID for ds in compressed)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_a_rerun_replaces_the_images_it_wrote_and_never_empties_a_folder_it_did_not(tmp_path):
    root = tmp_path / "rsna"
    write_rsna(root, n_patients=12, seed=3, shape=(96, 80))
    first = _digest(root)
    stale = root / "train_images" / "999" / "1.dcm"  # as a former generator version or more patients left it
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    write_rsna(root, n_patients=12, seed=3, shape=(96, 80))
    assert not stale.exists() and _digest(root) == first
    (root / "train_images" / ".synthetic").unlink()  # a folder the generator did not write (or real data)
    stale.parent.mkdir()
    stale.write_bytes(b"not ours")
    write_rsna(root, n_patients=12, seed=3, shape=(96, 80))
    assert stale.read_bytes() == b"not ours"


def _breast_with(birads: int, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """One breast rendered with the lesion of ``birads`` and without it (same tissue, same draw)."""
    from dataclasses import replace

    lesion, _ = lesion_for_birads(np.random.default_rng(11), birads, seed=5)
    lesion = replace(lesion, radius=0.045, amplitude=0.1, depth=0.5, height=0.0)
    shape = (size, size * 13 // 16)
    with_lesion = render_breast(np.random.default_rng(3), shape, "CC", "L", 2, lesion)
    without = render_breast(np.random.default_rng(3), shape, "CC", "L", 2, replace(lesion, kind="none"))
    return with_lesion, without


def test_lesion_classes_differ_locally_not_in_size_or_brightness():
    """The truth table's promise: BI-RADS 2-6 lesions of one radius and amplitude add about
    the same brightness to the image, all of it near the lesion; and they differ from each
    other there (outline, margin, calcifications), visibly at the tiny models' 96 px."""
    added, crops = {}, {}
    for birads in (2, 3, 4, 5):
        with_lesion, without = _breast_with(birads)
        diff = with_lesion - without
        ys, xs = np.nonzero(np.abs(diff) > 1e-6)
        assert ys.size, f"BI-RADS {birads}: no lesion drawn"
        # Local: every changed pixel within three radii (spicules reach 2.6) of the centre.
        centre_y, centre_x = np.median(ys), np.median(xs)
        assert np.hypot(ys - centre_y, xs - centre_x).max() < 3 * 0.045 * 512, birads
        added[birads] = diff.sum()
        small = Image.fromarray(diff.astype(np.float32), mode="F").resize((78, 96), Image.Resampling.BOX)
        crops[birads] = np.asarray(small)
    # Equal size and brightness: the classes add brightness within a factor of two of each other
    # (the old generator's BI-RADS 5 mass added about eight times a BI-RADS 2 mass's).
    assert max(added.values()) / min(added.values()) < 2.0, added
    # Different local evidence at 96 px: no two classes draw the same pattern.
    for a in crops:
        for b in crops:
            if a < b:
                assert np.abs(crops[a] - crops[b]).max() > 0.02, (a, b)
