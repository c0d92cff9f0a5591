"""EMBED table join at full scale: time and peak memory of load + filter + manifest write.

    python -m benchmark.perf.embed_tables [--rows 500000]

Writes a metadata table of ``--rows`` rows (exams of four 2D views, plus C-view and
spot rows) and a matching clinical table, then runs ``load_embed`` and writes the
manifest in a fresh process, reporting wall seconds and that process's peak memory.
The target is under 60 s and 4 GiB for 500,000 rows.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.synth import EMBED_PATH_PREFIX


def write_tables(folder: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_exams = rows // 4
    acc = (1_000_000_000_000_000 + rng.choice(8_999_999_999_999_999, n_exams, replace=False)).astype(str)
    empi = (10_000_000 + rng.integers(0, 89_999_999, n_exams // 2 + 1)).astype(str)[rng.integers(0, n_exams // 2, n_exams)]
    side = np.tile(["L", "L", "R", "R"], n_exams)
    view = np.tile(["CC", "MLO"], 2 * n_exams)
    exam_of_row = np.repeat(np.arange(n_exams), 4)
    image_type = np.where(rng.random(4 * n_exams) < 0.03, "cview", "2D")
    spot = np.where(rng.random(4 * n_exams) < 0.02, "1.0", "")
    paths = [f"{EMBED_PATH_PREFIX}cohort_1/{empi[e]}/{acc[e]}/{i}.dcm" for i, e in enumerate(exam_of_row)]
    pd.DataFrame({
        "empi_anon": empi[exam_of_row], "acc_anon": acc[exam_of_row], "anon_dicom_path": paths,
        "ImageLateralityFinal": side, "ViewPosition": view, "FinalImageType": image_type, "spot_mag": spot,
        "StudyDescription": "MG Screening Bilateral", "SeriesDescription": "x", "num_roi": 0, "ROI_coords": "",
    }).to_csv(folder / "meta.csv", index=False)
    # one to three finding rows per exam, sides L / R / B / empty
    n_find = rng.integers(1, 4, n_exams)
    exam = np.repeat(np.arange(n_exams), n_find)
    pd.DataFrame({
        "empi_anon": empi[exam], "acc_anon": acc[exam], "study_date_anon": "2019-01-01",
        "desc": "MG Screening Bilateral", "side": rng.choice(["L", "R", "B", ""], len(exam)),
        "asses": rng.choice(list("ANBPSMKX"), len(exam), p=[.1, .4, .3, .05, .06, .04, .03, .02]),
        "tissueden": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], len(exam), p=[.1, .4, .39, .1, .01]),
        "numfind": 1, "massshape": "", "massmargin": "", "massdens": "", "calcfind": "", "calcdistri": "",
        "calcnumber": "", "path_severity": "", "age_at_study": 55.5, "RACE_DESC": "Asian",
        "ETHNIC_GROUP_DESC": "Unreported",
    }).to_csv(folder / "clin.csv", index=False)


def _load_and_write(folder: str, out: mp.Queue) -> None:
    from benchmark.data.embed import load_embed

    start = time.perf_counter()
    records, excluded = load_embed(Path(folder), "meta.csv", "clin.csv", {EMBED_PATH_PREFIX: "images/"})
    records.to_csv(Path(folder) / "manifest.csv", index=False)
    excluded.to_csv(Path(folder) / "exclusions.csv", index=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.put((seconds, peak, len(records), int((excluded["scope"] == "all").sum())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing a {args.rows}-row metadata table and its clinical table ...")
        write_tables(Path(tmp), args.rows)
        queue: mp.Queue = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(target=_load_and_write, args=(tmp, queue))
        proc.start()
        seconds, peak, kept, dropped = queue.get()
        proc.join()
        rows = len(pd.read_csv(Path(tmp) / "meta.csv", usecols=[0]))
        print(f"rows {rows}: kept {kept} + excluded {dropped} = {kept + dropped}")
        print(f"join + filter + manifest: {seconds:.1f} s (target < 60 s), peak memory {peak / 2**30:.2f} GiB "
              f"(target < 4 GiB)")


if __name__ == "__main__":
    main()
