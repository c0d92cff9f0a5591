"""Bad input never crashes, never wipes a dataset, never writes outside the results: each
case gives one line naming what is wrong, or a recorded exclusion with its reason."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
import yaml
from pydicom.uid import ExplicitVRLittleEndian

from benchmark.config import load_config
from benchmark.data.dicom_io import stable_uid, write_mammogram
from benchmark.data.embed import load_embed
from benchmark.data.preprocess import PreprocessSettings, preprocess
from benchmark.data.rsna import load_rsna
from benchmark.errors import BenchmarkError

REPO = Path(__file__).resolve().parents[1]


def _rsna_copy(rsna_root, tmp_path, edit) -> Path:
    root = tmp_path / "rsna"
    shutil.copytree(rsna_root, root)
    table = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(root / "train.csv", index=False)
    return root


def _reasons(excluded: pd.DataFrame) -> dict:
    return {(row.image_id, row.scope): row.reason for row in excluded.itertuples()}


# --- labels and tables -------------------------------------------------------------------
def test_rsna_labels_are_parsed_per_row_from_their_text(rsna_root, tmp_path):
    def edit(t):
        t.loc[0, "cancer"], t.loc[1, "cancer"], t.loc[2, "cancer"], t.loc[3, "cancer"] = "1.0", " 0 ", "", "yes"
        t.loc[4, "age"], t.loc[5, "BIRADS"], t.loc[6, "density"] = "forty", "x", "E"

    root = _rsna_copy(rsna_root, tmp_path, edit)
    table = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    records, excluded = load_rsna(root)
    ids = table["image_id"].tolist()
    by_id = records.set_index("image_id")
    assert by_id.loc[ids[0], "cancer"] == 1 and by_id.loc[ids[1], "cancer"] == 0
    reasons = _reasons(excluded)
    assert reasons[(ids[2], "all")] == "cancer is None, not 0 or 1"
    assert reasons[(ids[3], "all")] == "cancer is 'yes', not 0 or 1"
    assert len(records) + sum(s == "all" for _, s in reasons) == len(table)  # one odd cell, one row
    assert by_id.loc[ids[4], "age"] == "" and "age is 'forty'" in reasons[(ids[4], "field:age")]
    assert pd.isna(by_id.loc[ids[5], "birads"]) and "BIRADS is 'x'" in reasons[(ids[5], "field:BIRADS")]
    assert pd.isna(by_id.loc[ids[6], "density"]) and "density is 'E'" in reasons[(ids[6], "field:density")]


def test_embed_exclusion_reasons_say_what_the_cell_held(embed_root, tmp_path):
    root = tmp_path / "embed"
    shutil.copytree(embed_root, root)
    clinical = pd.read_csv(root / "EMBED_OpenData_clinical.csv", dtype=str, keep_default_na=False)
    first, second = clinical["acc_anon"].unique()[:2]
    clinical.loc[clinical["acc_anon"] == first, "tissueden"] = "B"
    clinical.loc[clinical["acc_anon"] == second, "asses"] = ""
    clinical.to_csv(root / "EMBED_OpenData_clinical.csv", index=False)
    records, excluded = load_embed(root, "EMBED_OpenData_metadata.csv", "EMBED_OpenData_clinical.csv",
                                   {"/mnt/NAS2/mammo/anon_dicom/": "images/"})
    density = excluded[excluded["scope"] == "task:density"]["reason"]
    birads = excluded[excluded["scope"] == "task:birads"]["reason"]
    assert (density == "tissueden is 'B', not a number 1 to 5").any()
    assert (birads == "asses empty").any() and not birads.str.contains("''").any()


def test_header_only_table_stops_preprocess_and_check_data_with_one_line(rsna_root, tmp_path):
    root = _rsna_copy(rsna_root, tmp_path, lambda t: t.drop(t.index, inplace=True))
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["data"]["rsna"] = {"root": str(root), "table": "train.csv", "images": "train_images"}
    config["results"] = str(tmp_path / "results")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    for command in (["check-data", "--dataset", "rsna"], ["preprocess", "--dataset", "rsna", "--out-dir",
                                                            str(tmp_path / "cache")]):
        run = subprocess.run(["python", "-m", "benchmark", *command, "--config", str(path)], capture_output=True,
                             text=True, cwd=REPO)
        assert run.returncode == 2, run.stderr
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and "no usable image" in last and "Traceback" not in run.stderr, run.stderr


def test_a_split_without_a_class_in_test_is_refused_and_a_thin_one_warned(tmp_path):
    from benchmark.data.split import check_split, make_split
    from benchmark.tasks import TASKS

    manifest = pd.DataFrame({"patient_id": [str(p) for p in range(30)], "image_id": [f"i{p}" for p in range(30)],
                             "cancer": [1 if p == 0 else 0 for p in range(30)]})
    table = make_split(manifest, "cancer", 0, {"train": 0.7, "val": 0.1, "test": 0.2}, [1.0])
    task = [t for t in TASKS.values() if t.dataset == "rsna"]
    with pytest.raises(BenchmarkError, match="no test image of class 1"):
        check_split(table, manifest, task, "rsna")
    one = manifest.iloc[:1].assign(cancer=0)
    warnings = check_split(make_split(one, "cancer", 0, {"train": 0.7, "val": 0.1, "test": 0.2}, [1.0]), one, [], "rsna")
    assert any("only 1 patient" in w for w in warnings)


def test_split_checks_only_the_configured_tasks(tmp_path, capsys):
    """A class missing from test refuses the split only for a task the run evaluates."""
    from benchmark.data.steps import run_split

    manifest = pd.DataFrame({"patient_id": [str(p) for p in range(30)], "image_id": [f"i{p}" for p in range(30)],
                             "exam_id": [f"e{p}" for p in range(30)], "breast_id": [f"b{p}" for p in range(30)],
                             "png": [f"{p}.png" for p in range(30)], "cancer": [1 if p == 0 else 0 for p in range(30)]})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    split_cfg = {"seed": 0, "ratios": {"train": 0.7, "val": 0.1, "test": 0.2}, "fractions": [1.0], "draws": 1,
                 "stratify": {"rsna": "cancer"}}
    with pytest.raises(BenchmarkError, match="task cancer: no test image of class 1"):
        run_split("rsna", split_cfg, tmp_path / "manifest.csv", tmp_path / "a.csv", ["rsna/cancer"])
    run_split("rsna", split_cfg, tmp_path / "manifest.csv", tmp_path / "b.csv", ["embed/density"])
    assert (tmp_path / "b.csv").exists()
    assert "classes checked for no task (none configured)" in capsys.readouterr().out


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),  # Python's own writes (numpy, pandas, PIL)
    RuntimeError("I/O error: No space left on device (os error 28)"),  # safetensors (Rust) says only this
])
def test_a_full_disk_ends_in_one_line_naming_the_file(tmp_path, monkeypatch, capsys, failure):
    from benchmark import cli
    from benchmark.data import split as split_module

    manifest = pd.DataFrame({"patient_id": [str(p) for p in range(30)], "image_id": [f"i{p}" for p in range(30)],
                             "exam_id": [f"e{p}" for p in range(30)], "breast_id": [f"b{p}" for p in range(30)],
                             "png": [f"{p}.png" for p in range(30)], "cancer": [p % 2 for p in range(30)]})
    manifest.to_csv(tmp_path / "manifest.csv", index=False)

    def full_disk(*args, **kwargs):
        raise failure

    monkeypatch.setattr(split_module, "write_split", full_disk)
    out = tmp_path / "splits" / "rsna.csv"
    with pytest.raises(SystemExit) as stop:
        cli.main(["split", "--config", str(REPO / "config/ci.yaml"), "--dataset", "rsna",
                  "--manifest", str(tmp_path / "manifest.csv"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {out}: no space left on device while writing it (") and "GiB free" in err[0]


# --- paths and files ------------------------------------------------------------------------
@pytest.mark.parametrize("patient, image", [
    ("pätient 1", "bïld 2 (ü)"),  # spaces, accents, parentheses: legal file names
    ("p" * 120, "i" * 200),  # long ids
    ("Patient-A", "Image-A"),  # upper case
])
def test_odd_but_legal_ids_are_kept_and_cached_under_safe_names(rsna_root, tmp_path, patient, image):
    def rename(table):
        old_patient, old_image = table.loc[0, "patient_id"], table.loc[0, "image_id"]
        folder = tmp_path / "rsna" / "train_images"
        (folder / old_patient / f"{old_image}.dcm").rename(folder / old_patient / f"{image}.dcm")
        (folder / old_patient).rename(folder / patient)
        table.loc[table["patient_id"] == old_patient, "patient_id"] = patient
        table.loc[0, "image_id"] = image

    root = _rsna_copy(rsna_root, tmp_path, rename)
    records, excluded = load_rsna(root)
    kept = records[records["image_id"] == image]
    assert len(kept) == 1 and kept["patient_id"].iloc[0] == patient, _reasons(excluded)
    manifest, _ = preprocess(kept, root, tmp_path / "cache", PreprocessSettings(long_side=32))
    png = manifest["png"].iloc[0]
    assert png.startswith("images/id-") and (tmp_path / "cache" / png).is_file()


def test_ids_that_differ_only_in_case_get_distinct_cache_files():
    from benchmark.data.preprocess import cache_name

    names = {cache_name(i) for i in ("abc", "ABC", "Abc", "abC")}
    assert len({n.lower() for n in names}) == 4  # distinct on a case-insensitive file system too


def test_an_image_id_that_climbs_out_is_excluded_and_nothing_is_written_outside(rsna_root, tmp_path):
    root = _rsna_copy(rsna_root, tmp_path, lambda t: t.__setitem__("image_id", ["../../x"] + list(t["image_id"][1:])))
    records, excluded = load_rsna(root)
    assert "../../x" not in set(records["image_id"])
    assert "'../../x' holds a path separator" in _reasons(excluded)[("../../x", "all")]
    # an id that reaches preprocess from elsewhere names its PNG by a hash, inside the cache
    stored = np.full((64, 48), 100, np.uint16)
    stored[10:50, :30] = 2000
    write_mammogram(tmp_path / "a.dcm", stored, bits_stored=12, patient_id="1", study_uid=stable_uid("s"),
                    series_uid=stable_uid("se"), sop_uid=stable_uid("a"), laterality="L", view="CC")
    odd = pd.DataFrame([{"dataset": "t", "image_id": "../../escaped", "dicom_path": "a.dcm", "laterality": "L"}])
    manifest, _ = preprocess(odd, tmp_path, tmp_path / "cache", PreprocessSettings(long_side=32))
    written = sorted(p for p in tmp_path.rglob("*.png"))
    assert len(written) == 1 and (tmp_path / "cache" / "images") in written[0].parents
    assert manifest["png"].iloc[0].startswith("images/id-")


def test_an_absolute_rsna_image_folder_is_accepted(rsna_root, tmp_path):
    records, _ = load_rsna(rsna_root, images=str(Path(rsna_root) / "train_images"))
    manifest, excluded = preprocess(records.head(3), Path("/nonexistent-root"), tmp_path / "cache",
                                    PreprocessSettings(long_side=32))
    assert len(manifest) == 3 and excluded.empty


def _dicom(path: Path, **changes):
    stored = np.full((32, 24), 500, np.uint16)
    write_mammogram(path, stored, bits_stored=12, patient_id="1", study_uid=stable_uid("s"),
                    series_uid=stable_uid("se"), sop_uid=stable_uid(path.name), laterality="L", view="CC")
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_undecodable_files_get_reasons_a_person_understands(tmp_path):
    _dicom(tmp_path / "nopixels.dcm", PixelData=None)
    _dicom(tmp_path / "colour.dcm", SamplesPerPixel=3, PhotometricInterpretation="RGB",
           PixelData=np.zeros((32, 24, 3), np.uint16).tobytes(), PlanarConfiguration=0)
    long = np.full((32, 24), 500, np.uint16).tobytes() + b"\0" * 200
    _dicom(tmp_path / "long.dcm", PixelData=long)
    records = pd.DataFrame([{"dataset": "t", "image_id": n, "dicom_path": f"{n}.dcm", "laterality": "L"}
                            for n in ("nopixels", "colour", "long")])
    manifest, excluded = preprocess(records, tmp_path, tmp_path / "cache", PreprocessSettings(long_side=16))
    reasons = dict(zip(excluded.image_id, excluded.reason))
    assert manifest.empty
    assert reasons["nopixels"] == "no pixel data"
    assert reasons["colour"].startswith("colour image (RGB")
    assert reasons["long"].startswith("pixel data holds 1736 bytes, but Rows x Columns x 16 bits needs 1536")


# --- config and state ---------------------------------------------------------------------
def test_a_yaml_list_config_is_one_line(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- results\n- data\n")
    with pytest.raises(BenchmarkError, match="top level must be a mapping"):
        load_config(path)


def test_override_values_are_checked_against_the_preset_types(tmp_path):
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    for value, message in [("five", "late_loss_start_step: 'five' is a string, but the preset's value is a number"),
                           (2.5, "late_loss_start_step: 2.5 is not a whole number")]:
        config["models"]["mama"]["overrides"] = {"late_loss_start_step": value}
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(BenchmarkError, match=message):
            load_config(path)
    config["models"]["mama"]["overrides"] = {"train": {"lr": "fast"}}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(BenchmarkError, match=r"models.mama.overrides.train.lr: 'fast' is a string"):
        load_config(path)


def test_a_resume_pointer_to_a_missing_state_falls_back_to_the_newest_complete_one(tmp_path, capsys):
    from benchmark.resume import load_state, save_state

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fingerprint = {"run": 1}
    save_state(tmp_path, model, optimizer, {"step": 5, "fingerprint": fingerprint})
    keep = tmp_path / "step-00000005"
    backup = tmp_path / "backup"
    shutil.copytree(keep, backup)
    save_state(tmp_path, model, optimizer, {"step": 9, "fingerprint": fingerprint})
    shutil.rmtree(tmp_path / "step-00000009")  # 'latest' now names a folder that is gone
    backup.rename(keep)
    state = load_state(tmp_path, fingerprint)
    assert state["step"] == 5 and "newest complete state step-00000005" in capsys.readouterr().out
    shutil.rmtree(keep)
    assert load_state(tmp_path, fingerprint) is None and "starting afresh" in capsys.readouterr().out


def test_degenerate_test_sets_carry_a_note_on_every_forced_value(tmp_path):
    from benchmark.tables import build_table

    n = 12
    frame = pd.DataFrame({"dataset": "rsna", "task": "cancer", "protocol": "linear_probe", "fraction": "1",
                          "model": "m", "seed": 0, "draw": 0, "split": ["val"] * n + ["test"] * n,
                          "image_id": [f"i{k}" for k in range(2 * n)], "patient_id": [f"p{k}" for k in range(2 * n)],
                          "breast_id": [f"b{k}" for k in range(2 * n)],
                          "label": [k % 2 for k in range(n)] + [0] * n,
                          "score_0": np.linspace(0.1, 0.9, 2 * n), "score_1": 1 - np.linspace(0.1, 0.9, 2 * n)})
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    table = build_table([path], 20, 0, 0.95, None)
    bacc = table[table.metric == "bacc"].iloc[0]
    assert "lacks class(es) 1" in bacc.note
    assert table[table.metric == "auc"].iloc[0].note.startswith("test set has a single class")


def test_missing_inputs_to_pretrain_and_table_are_one_line(tmp_path):
    for command in (["pretrain", "--model", "clip", "--manifest", str(tmp_path / "none.csv"), "--split",
                     str(tmp_path / "none-split.csv"), "--out-dir", str(tmp_path / "out")],
                    ["table", "--predictions", str(tmp_path / "p.csv"), "--out", str(tmp_path / "t.csv")]):
        run = subprocess.run(["python", "-m", "benchmark", *command, "--config", "config/ci.yaml"],
                             capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert run.stderr.startswith("error:") and "not found" in run.stderr and len(run.stderr.splitlines()) == 1
