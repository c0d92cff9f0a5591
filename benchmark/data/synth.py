"""Deterministic synthetic data in the real EMBED and RSNA-Mammo file formats.

``write_embed`` writes ``EMBED_OpenData_metadata.csv``, ``EMBED_OpenData_clinical.csv``
and DICOM files under ``images/cohort_<k>/<empi>/<study uid>/<series uid>/<sop>.dcm``;
the metadata's ``anon_dicom_path`` carries the real dataset's absolute prefix
(``EMBED_PATH_PREFIX``), which the config remaps, exactly as a user of the real data
must. ``write_rsna`` writes ``train.csv`` and ``train_images/<patient_id>/<image_id>.dcm``.

Every random draw comes from a generator seeded by (seed, dataset, patient, ...), so
the output does not depend on the number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.dicom_io import stable_uid, write_mammogram
from benchmark.data.render import Lesion, Machine, render_breast, to_stored_values

# Each dataset's generator version, a param of the workflow's synth rule: bump a dataset's
# with every change to what the generator writes for it (every dataset's for a change to the
# shared rendering), and that dataset's synthetic data, and all that depends on it, reruns.
# 2: lesion classes of equal size and brightness; 3: lesions twice as wide (docs/synthetic-data.md);
# rsna 4: a difficult negative's look-alike breast on either side.
GENERATOR_VERSION = {"embed": 3, "rsna": 4, "vindr": 3}
EMBED_PATH_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"
BIRADS_LETTER = {0: "A", 1: "N", 2: "B", 3: "P", 4: "S", 5: "M", 6: "K"}
RACES = [
    ("Caucasian or White", 0.5),
    ("African American  or Black", 0.35),  # the real table's double space
    ("Asian", 0.07),
    ("Native Hawaiian or Other Pacific Islander", 0.02),
    ("Unknown, Unavailable or Unreported", 0.06),
]
ETHNICITIES = [("Non-Hispanic or Latino", 0.85), ("Hispanic or Latino", 0.08), ("Unreported", 0.07)]
SCREENING_DESCS = [
    "MG Screening Bilateral",
    "MG Screen Bilat w/Tomo/CAD Stnd Protocol",
    "MG Screening Bilateral  w/CAD",
]
DIAGNOSTIC_DESCS = ["MG Diagnostic Bilateral", "MG Diag Bilat w/Tomo/CAD Stnd Protocol"]
# Screening exams end in BI-RADS 0-2, diagnostic work-ups in 3-6 (as in the real data).
SCREENING_BIRADS = {0: 0.18, 1: 0.5, 2: 0.32}
DIAGNOSTIC_BIRADS = {3: 0.25, 4: 0.3, 5: 0.22, 6: 0.23}
DENSITY_P = {1: 0.12, 2: 0.38, 3: 0.38, 4: 0.12}
# Every lesion class: radius (fraction of image height; 11 to 14 px at the 96 px model input, docs/synthetic-data.md,
# Lesion size) and brightness budget (render.lesion_budget).
LESION_RADIUS = (0.11, 0.15)
LESION_AMPLITUDE = (0.10, 0.14)
RSNA_BENIGN_LESION = 0.5  # share of RSNA's non-cancer breasts with a benign lesion
# Share of RSNA patients with a cancer: enriched (the real table has about 2 %) so that the
# miniature's test split holds enough cancers for an interval a comparison can use.
RSNA_CANCER_RATE = 0.5


def _rng(*keys: object) -> np.random.Generator:
    entropy = [abs(hash_str(str(k))) for k in keys]
    return np.random.default_rng(entropy)


def hash_str(text: str) -> int:
    """A stable 32-bit hash (Python's ``hash`` is salted per process)."""
    import zlib

    return zlib.crc32(text.encode())


def _choice(rng: np.random.Generator, table: dict | list):
    items = list(table.items()) if isinstance(table, dict) else table
    values = [k for k, _ in items]
    p = np.array([w for _, w in items], dtype=float)
    return values[rng.choice(len(values), p=p / p.sum())]


def lesion_for_birads(rng: np.random.Generator, birads: int, seed: int) -> tuple[Lesion, dict]:
    """A lesion whose look follows the BI-RADS level, with the EMBED finding codes.

    Every lesion draws its size and brightness budget from the same ranges (``LESION_RADIUS``,
    ``LESION_AMPLITUDE``; ``render.lesion_budget``): the BI-RADS level lives in the outline,
    the margin and the calcifications' size and arrangement, which need local evidence.
    """
    depth, height = rng.uniform(0.2, 0.8), rng.uniform(-0.7, 0.7)
    common = dict(depth=depth, height=height, seed=seed, radius=rng.uniform(*LESION_RADIUS),
                  amplitude=rng.uniform(*LESION_AMPLITUDE))
    if birads == 1:
        return Lesion("none", **common), {}
    if birads == 0:
        return Lesion("asymmetry", shape="oval", margin="indistinct", **common), {"massshape": "F"}
    if birads == 2:
        if rng.random() < 0.5:
            return (Lesion("mass", shape="round", margin="circumscribed", **common),
                    {"massshape": "R", "massmargin": "D", "massdens": "="})
        return (Lesion("calc", n_calcs=int(rng.integers(3, 6)), calc_size=4.0, calc_spread=0.08, **common),
                {"calcfind": "C", "calcdistri": "D", "calcnumber": 4})
    if birads == 3:
        return (Lesion("mass", shape="oval", margin="circumscribed", **common),
                {"massshape": "O", "massmargin": "D", "massdens": "="})
    if birads == 4:
        calcs = rng.random() < 0.4
        return (
            Lesion("mass+calc" if calcs else "mass", shape="irregular", margin="indistinct",
                   n_calcs=int(rng.integers(6, 11)) if calcs else 0, calc_size=2.0, calc_spread=0.03, **common),
            {"massshape": "X", "massmargin": "I", "massdens": "+"}
            | ({"calcfind": "I", "calcdistri": "G", "calcnumber": 8} if calcs else {}),
        )
    return (
        Lesion("mass+calc", shape="irregular", margin="spiculated", n_calcs=int(rng.integers(8, 13)),
               calc_size=2.0, calc_spread=0.03, calc_linear=True, clip=birads == 6, **common),
        {"massshape": "X", "massmargin": "S", "massdens": "+", "calcfind": "B", "calcdistri": "L",
         "calcnumber": 12},
    )


# Storage conventions seen in the real data: bit depth, photometric interpretation,
# rescale intercept and (RSNA) JPEG 2000 compression differ between units.
# EMBED's manufacturers with shares like the real tables' (mostly Hologic), and the storage
# conventions of their units: a subgroup by manufacturer is also a subgroup by image encoding.
EMBED_MANUFACTURERS = [
    ("HOLOGIC, Inc.", 0.85, [dict(bits=12), dict(bits=14)]),
    ("GE MEDICAL SYSTEMS", 0.1, [dict(bits=16, intercept=-1024.0)]),
    ("FUJIFILM Corporation", 0.05, [dict(bits=12, photometric="MONOCHROME1")]),
]
RSNA_MACHINE_CONVENTIONS = {
    49: dict(bits=12, transfer_syntax="j2k_lossless"),
    21: dict(bits=12, photometric="MONOCHROME1", transfer_syntax="j2k_lossless"),
    29: dict(bits=12, photometric="MONOCHROME1"),
    48: dict(bits=14), 93: dict(bits=16), 170: dict(bits=12), 190: dict(bits=12), 216: dict(bits=14),
}


def _machine(rng: np.random.Generator, name: str, **conventions) -> Machine:
    return Machine(gain=rng.uniform(0.7, 0.95), offset=rng.uniform(0.01, 0.06),
                   noise=rng.uniform(0.006, 0.015), name=name, **conventions)


def _window(machine: Machine) -> tuple[float, float]:
    """A VOI window (centre, width) around the tissue range, in rescaled values."""
    top = 2**machine.bits - 1
    centre = (machine.offset + 0.5 * machine.gain) * top
    if machine.photometric == "MONOCHROME1":
        centre = top - centre
    return round(centre), round(1.1 * machine.gain * top)


@dataclass
class ImageJob:
    """Everything needed to render and write one DICOM file (picklable)."""

    path: str
    seed: tuple
    shape: tuple[int, int]
    view: str
    laterality: str
    density: int
    lesion: Lesion
    machine: Machine
    dicom: dict


def _render_and_write(job: ImageJob) -> None:
    rng = np.random.default_rng(list(job.seed))
    image = render_breast(rng, job.shape, job.view, job.laterality, job.density, job.lesion)
    machine = job.machine
    stored = to_stored_values(rng, image, machine)
    with warnings.catch_warnings():
        # VinDr's de-identification replaced the UIDs by MD5 hex digests, which are not valid
        # UIDs; its synthetic files carry them as the release does, and pydicom warns
        warnings.filterwarnings("ignore", message="Invalid value for VR UI", category=UserWarning)
        write_mammogram(Path(job.path), stored, bits_stored=machine.bits, laterality=job.laterality[:1],
                        view=job.view, photometric=machine.photometric, rescale=(1.0, machine.intercept),
                        window=_window(machine), transfer_syntax=machine.transfer_syntax, **job.dicom)


WRITTEN_HERE = ".synthetic"  # the marker of an image folder this generator wrote


def _write_images(folder: Path, jobs: list[ImageJob], workers: int) -> None:
    """Render ``jobs`` into ``folder``, first removing what an earlier run of the generator
    wrote there (its marker says so): a new generator version or fewer patients would
    otherwise leave DICOMs that no table lists. A folder without the marker (real data, or
    one written before the marker) is never emptied."""
    if (folder / WRITTEN_HERE).is_file():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WRITTEN_HERE).write_text("written by benchmark.data.synth; its next run replaces this folder\n")
    _run_jobs(jobs, workers)


def _run_jobs(jobs: list[ImageJob], workers: int) -> None:
    if workers <= 1:
        for job in jobs:
            _render_and_write(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_render_and_write, jobs, chunksize=16))


def _embed_image(exam: dict, side: str, view: str, lesion: Lesion, image_type: str = "2D", spot_mag="",
                 tag: str = "") -> tuple[dict, ImageJob]:
    """One metadata row and the render job for one image of an EMBED exam."""
    seed, acc, empi, machine = exam["seed"], exam["acc"], exam["empi"], exam["machine"]
    series_uid = stable_uid(seed, acc, side, view, tag, "series")
    sop_uid = stable_uid(seed, acc, side, view, tag, "sop")
    rel = f"cohort_{exam['cohort']}/{empi}/{exam['study_uid']}/{series_uid}/{sop_uid}.dcm"
    row = dict(
        empi_anon=empi, acc_anon=acc, anon_dicom_path=EMBED_PATH_PREFIX + rel, cohort_num=exam["cohort"],
        ImageLateralityFinal=side, ViewPosition=view, FinalImageType=image_type, spot_mag=spot_mag,
        StudyDescription=exam["desc"], SeriesDescription=f"{side} {view}{' ' + tag if tag else ''}",
        num_roi=0 if lesion.kind == "none" else 1, ROI_coords="", Manufacturer=exam["manufacturer"],
        PhotometricInterpretation=machine.photometric,
    )
    job = ImageJob(
        path=str(Path(exam["root"]) / "images" / rel), seed=(seed, hash_str(sop_uid)), shape=exam["shape"],
        view=view, laterality=side, density=exam["density"], lesion=lesion, machine=machine,
        dicom=dict(patient_id=empi, study_uid=exam["study_uid"], series_uid=series_uid, sop_uid=sop_uid),
    )
    return row, job


def write_embed(root: Path, n_patients: int, seed: int, shape=(512, 416), workers: int = 1) -> dict:
    root = Path(root)
    meta_rows, clin_rows, jobs = [], [], []
    for p in range(n_patients):
        prng = _rng(seed, "embed", "patient", p)
        empi = str(10_000_000 + int(prng.integers(0, 89_999_999)))
        race = _choice(prng, RACES) if prng.random() > 0.03 else ""  # missing values occur
        ethnicity = _choice(prng, ETHNICITIES)
        age = float(np.round(prng.uniform(40, 80), 2))
        patient_density = _choice(prng, DENSITY_P)
        male = prng.random() < 0.01  # tissueden 5: out of the density task
        n_exams = 1 if prng.random() < 0.7 else 2
        for e in range(n_exams):
            erng = _rng(seed, "embed", "exam", p, e)
            acc = str(1_000_000_000_000_000 + int(erng.integers(0, 8_999_999_999_999_999)))
            screening = erng.random() < 0.6
            desc = str(erng.choice(SCREENING_DESCS if screening else DIAGNOSTIC_DESCS))
            density = int(np.clip(patient_density + erng.choice([-1, 0, 0, 0, 0, 1]), 1, 4))
            # One breast carries the exam's assessment, the other is negative or benign.
            exam_birads = _choice(erng, SCREENING_BIRADS if screening else DIAGNOSTIC_BIRADS)
            lead = str(erng.choice(["L", "R"]))
            other_birads = 1 if exam_birads in (0, 1) or erng.random() < 0.75 else 2
            breast_birads = {lead: exam_birads, ("R" if lead == "L" else "L"): other_birads}
            no_assessment = erng.random() < 0.02  # asses X: out of the BI-RADS task
            study_uid = stable_uid(seed, "embed", acc)
            date = (pd.Timestamp("2014-01-01") + pd.Timedelta(days=int(erng.integers(0, 2500)))).date()
            age_exam = float(np.round(age + e * 1.1, 2)) if erng.random() > 0.02 else np.nan
            maker = int(erng.choice(len(EMBED_MANUFACTURERS), p=[share for _, share, _ in EMBED_MANUFACTURERS]))
            manufacturer, _, units = EMBED_MANUFACTURERS[maker]
            unit = int(erng.integers(0, len(units)))
            machine = _machine(erng, f"embed-{maker}-{unit}", **units[unit])
            base = dict(empi_anon=empi, acc_anon=acc, study_date_anon=str(date), desc=desc,
                        tissueden=5.0 if male else float(density), age_at_study=age_exam, RACE_DESC=race,
                        ETHNIC_GROUP_DESC=ethnicity)
            findings = []
            for side in ("L", "R"):
                lesion, codes = lesion_for_birads(erng, breast_birads[side], seed=hash_str(f"{acc}{side}"))
                findings.append((side, breast_birads[side], lesion, codes))
            if all(b == 1 for _, b, _, _ in findings):
                clin_rows.append(base | {"side": str(erng.choice(["B", ""])), "asses": "N", "numfind": 1})
            else:
                for k, (side, b, _, codes) in enumerate(findings, start=1):
                    path_sev = ""
                    if b >= 4:
                        malignant = b >= 5 or erng.random() < 0.4
                        path_sev = float(erng.choice([0, 1])) if malignant else 4.0
                    clin_rows.append(base | {"side": side, "asses": BIRADS_LETTER[b], "numfind": k,
                                             "path_severity": path_sev} | codes)
                if erng.random() < 0.15:  # a bilateral negative row beside the side findings
                    clin_rows.append(base | {"side": "B", "asses": "N", "numfind": len(findings) + 1})
            if no_assessment:
                for row in clin_rows[-len(findings) - 1:]:
                    if row["acc_anon"] == acc:
                        row["asses"] = "X"
            cohort = 1 + int(erng.integers(0, 2))

            exam = dict(seed=seed, root=root, shape=tuple(shape), acc=acc, empi=empi, cohort=cohort,
                        study_uid=study_uid, desc=desc, machine=machine, manufacturer=manufacturer, density=density)

            def add_image(side, view, lesion, exam=exam, **kind):
                row, job = _embed_image(exam, side, view, lesion, **kind)
                meta_rows.append(row)
                jobs.append(job)

            for side, _, lesion, _ in findings:
                for view in ("CC", "MLO"):
                    add_image(side, view, lesion)
            # Rows the benchmark must filter out: synthetic 2D (C-view) and spot/magnification views.
            if erng.random() < 0.15:
                add_image(lead, "CC", findings[0 if lead == "L" else 1][2], image_type="cview", tag="cview")
            if not screening and erng.random() < 0.4:
                add_image(lead, "CC", findings[0 if lead == "L" else 1][2], spot_mag=1.0, tag="spot")
    _write_images(root / "images", jobs, workers)
    clin_cols = ["empi_anon", "acc_anon", "study_date_anon", "desc", "side", "asses", "tissueden",
                 "numfind", "massshape", "massmargin", "massdens", "calcfind", "calcdistri",
                 "calcnumber", "path_severity", "age_at_study", "RACE_DESC", "ETHNIC_GROUP_DESC"]
    pd.DataFrame(meta_rows).to_csv(root / "EMBED_OpenData_metadata.csv", index=False)
    pd.DataFrame(clin_rows).reindex(columns=clin_cols).to_csv(root / "EMBED_OpenData_clinical.csv", index=False)
    summary = {"dataset": "embed", "seed": seed, "patients": n_patients, "exams": len({r["acc_anon"] for r in meta_rows}),
               "images": len(meta_rows), "finding_rows": len(clin_rows), "shape": list(shape)}
    (root / "SYNTHETIC.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_rsna(root: Path, n_patients: int, seed: int, shape=(512, 416), workers: int = 1,
               cancer_rate: float = RSNA_CANCER_RATE) -> dict:
    root = Path(root)
    rows, jobs = [], []
    used_ids: set[int] = set()
    for p in range(n_patients):
        prng = _rng(seed, "rsna", "patient", p)
        patient_id = 10_000 + p * 7 + int(prng.integers(0, 7))
        site = int(prng.choice([1, 2]))
        machine_id = int(prng.choice(list(RSNA_MACHINE_CONVENTIONS)))
        machine = _machine(_rng(seed, "rsna", "machine", machine_id), f"rsna-{machine_id}",
                           **RSNA_MACHINE_CONVENTIONS[machine_id])
        density = _choice(prng, DENSITY_P)
        age = float(prng.integers(40, 85)) if prng.random() > 0.03 else np.nan
        cancer_side = str(prng.choice(["L", "R"])) if prng.random() < cancer_rate else None
        difficult = cancer_side is None and prng.random() < 0.2
        # The biopsied breast of a difficult negative, on either side like a cancer's.
        look_alike_side = str(prng.choice(["L", "R"])) if difficult else None
        for side in ("L", "R"):
            cancer = int(side == cancer_side)
            look_alike = side == look_alike_side
            lesion_seed = hash_str(f"r{patient_id}{side}")
            if cancer or look_alike:
                # A suspicious lesion; biopsied benign look-alikes (difficult negatives) share its look.
                lesion, _ = lesion_for_birads(prng, int(prng.choice([4, 4, 5])), seed=lesion_seed)
            else:
                # Half the other breasts carry a benign lesion of the same size and brightness,
                # so that a lesion's presence or brightness does not give the cancer away.
                benign = prng.random() < RSNA_BENIGN_LESION
                lesion, _ = lesion_for_birads(prng, int(prng.choice([2, 3])) if benign else 1, seed=lesion_seed)
            extra_views = ("ML",) if prng.random() < 0.05 else ()  # real RSNA has ML, LM, AT views too
            for view in ("CC", "MLO", *extra_views):
                image_id = int(prng.integers(1, 2**31 - 1))
                while image_id in used_ids:
                    image_id = int(prng.integers(1, 2**31 - 1))
                used_ids.add(image_id)
                rows.append(dict(
                    site_id=site, patient_id=patient_id, image_id=image_id, laterality=side, view=view,
                    age=age, cancer=cancer, biopsy=int(bool(cancer) or look_alike),
                    invasive=int(cancer and prng.random() < 0.7),
                    BIRADS="" if site == 2 else (0 if cancer or look_alike else 1),
                    implant=0, density="" if site == 2 else "ABCD"[density - 1], machine_id=machine_id,
                    difficult_negative_case=bool(difficult),
                ))
                study_uid = stable_uid(seed, "rsna", patient_id)
                jobs.append(ImageJob(
                    path=str(root / "train_images" / str(patient_id) / f"{image_id}.dcm"),
                    seed=(seed, hash_str(f"rsna{image_id}")), shape=tuple(shape), view=view, laterality=side,
                    density=density, lesion=lesion, machine=machine,
                    dicom=dict(patient_id=str(patient_id), study_uid=study_uid,
                               series_uid=stable_uid(seed, "rsna", image_id, "series"),
                               sop_uid=stable_uid(seed, "rsna", image_id, "sop")),
                ))
    _write_images(root / "train_images", jobs, workers)
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    summary = {"dataset": "rsna", "seed": seed, "patients": n_patients, "images": len(rows),
               "cancer_breasts": int(sum(r["cancer"] for r in rows) // 2), "shape": list(shape)}
    (root / "SYNTHETIC.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# VinDr-Mammo (docs/synthetic-data.md, VinDr-Mammo): breast-level BI-RADS 1-5 and density A-D,
# boxes for the non-benign findings (BI-RADS 3 and above), shares enriched as RSNA's are so the
# miniature's test split holds enough findings (the release: about 67 % BI-RADS 1, 1 % BI-RADS 5)
VINDR_BIRADS = {1: 0.35, 2: 0.25, 3: 0.15, 4: 0.15, 5: 0.10}
VINDR_DENSITY = {1: 0.05, 2: 0.15, 3: 0.6, 4: 0.2}  # mostly heterogeneously dense, as the release
VINDR_MANUFACTURERS = [("SIEMENS", "Mammomat Inspiration", 0.55, dict(bits=12)),
                       ("IMS s.r.l.", "GIOTTO IMAGE 3DL", 0.35, dict(bits=14, photometric="MONOCHROME1")),
                       ("Planmed", "Planmed Nuance", 0.10, dict(bits=12))]
VINDR_TEST_SHARE = 0.2  # the release's split: 4,000 training and 1,000 test studies


def _md5(*parts: object) -> str:
    """An id as the release writes them: the MD5 hex digest of the original UID."""
    return hashlib.md5(stable_uid(*parts).encode()).hexdigest()


def _vindr_findings(lesion: Lesion, birads: int) -> list[str]:
    """The finding categories a reader boxes for this lesion: only non-benign findings."""
    if birads < 3:
        return []
    found = ["Mass"] if "mass" in lesion.kind else []
    return found + (["Suspicious Calcification"] if "calc" in lesion.kind else [])


def _vindr_release_split(breast_rows: list[dict], seed: int) -> dict[str, str]:
    """``training`` or ``test`` per study, stratified as the release's split is (it balanced
    BI-RADS, density and findings between its 4,000 and 1,000 studies): studies in a seeded
    order sorted by density and worst BI-RADS, every fifth one a test study."""
    table = pd.DataFrame(breast_rows)
    strata = table.groupby("study_id").agg(density=("breast_density", "first"), birads=("breast_birads", "max"))
    strata["draw"] = np.random.default_rng([seed, 5]).permutation(len(strata))
    ordered = strata.sort_values(["density", "birads", "draw"]).index
    every = round(1 / VINDR_TEST_SHARE)
    return {study: "test" if k % every == every - 1 else "training" for k, study in enumerate(ordered)}


def write_vindr(root: Path, n_studies: int, seed: int, shape=(512, 416), workers: int = 1) -> dict:
    """Synthetic VinDr-Mammo in the release's layout: the three tables and
    ``images/<study_id>/<image_id>.dicom``, four views per study. Boxes are the lesion's
    nominal place (no task reads them)."""
    root = Path(root)
    breast_rows, finding_rows, meta_rows, jobs = [], [], [], []
    for s in range(n_studies):
        srng = _rng(seed, "vindr", "study", s)
        study_id = _md5(seed, "vindr", s, "study")
        split = None  # the release's split, stratified below once every study's labels are drawn
        density = _choice(srng, VINDR_DENSITY)
        age = int(srng.integers(35, 80)) if srng.random() > 0.05 else None
        maker = int(srng.choice(len(VINDR_MANUFACTURERS), p=[m[2] for m in VINDR_MANUFACTURERS]))
        manufacturer, model, _, conventions = VINDR_MANUFACTURERS[maker]
        machine = _machine(_rng(seed, "vindr", "machine", maker), f"vindr-{maker}", **conventions)
        for side in ("L", "R"):
            birads = _choice(srng, VINDR_BIRADS)
            lesion, _ = lesion_for_birads(srng, birads, seed=hash_str(f"v{study_id}{side}"))
            categories = _vindr_findings(lesion, birads)
            for view in ("CC", "MLO"):
                series_id, image_id = _md5(seed, study_id, side, view, "series"), _md5(seed, study_id, side, view)
                rows, cols = shape
                common = dict(study_id=study_id, series_id=series_id, image_id=image_id, laterality=side,
                              view_position=view, height=rows, width=cols, breast_birads=f"BI-RADS {birads}",
                              breast_density=f"DENSITY {'ABCD'[density - 1]}")
                breast_rows.append(common | {"split": split})
                if categories:
                    cy, cx, r = rows * (0.5 + 0.25 * lesion.height), cols * (0.15 + 0.55 * lesion.depth), lesion.radius * rows
                    if side == "R":
                        cx = cols - cx
                    finding_rows.append(common | {"finding_categories": str(categories),
                                                  "finding_birads": f"BI-RADS {birads}",
                                                  "xmin": round(cx - r, 2), "ymin": round(cy - r, 2),
                                                  "xmax": round(cx + r, 2), "ymax": round(cy + r, 2), "split": split})
                else:
                    finding_rows.append(common | {"finding_categories": "['No Finding']", "finding_birads": "",
                                                  "xmin": "", "ymin": "", "xmax": "", "ymax": "", "split": split})
                meta_rows.append({"SOP Instance UID": image_id, "Series Instance UID": series_id,
                                  "Patient's Age": "" if age is None else f"{age:03d}Y", "View Position": view,
                                  "Image Laterality": side, "Photometric Interpretation": machine.photometric,
                                  "Rows": rows, "Columns": cols, "Manufacturer": manufacturer,
                                  "Manufacturer's Model Name": model})
                jobs.append(ImageJob(
                    path=str(root / "images" / study_id / f"{image_id}.dicom"), seed=(seed, hash_str(image_id)),
                    shape=tuple(shape), view=view, laterality=side, density=density, lesion=lesion, machine=machine,
                    dicom=dict(patient_id="", study_uid=study_id, series_uid=series_id, sop_uid=image_id)))
    split_of = _vindr_release_split(breast_rows, seed)
    for row in breast_rows + finding_rows:
        row["split"] = split_of[row["study_id"]]
    _write_images(root / "images", jobs, workers)
    pd.DataFrame(breast_rows).to_csv(root / "breast-level_annotations.csv", index=False)
    pd.DataFrame(finding_rows).to_csv(root / "finding_annotations.csv", index=False)
    pd.DataFrame(meta_rows).to_csv(root / "metadata.csv", index=False)
    summary = {"dataset": "vindr", "seed": seed, "patients": n_studies, "images": len(breast_rows),  # a study is a patient
               "finding_rows": sum(r["finding_birads"] != "" for r in finding_rows), "shape": list(shape)}
    (root / "SYNTHETIC.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
