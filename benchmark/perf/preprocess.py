"""Preprocessing throughput on realistic mammograms, against baselines from the same run.

    python -m benchmark.perf.preprocess [--images 12] [--workers 2]

Writes 3328 x 2560, 12-bit synthetic mammograms as uncompressed, JPEG 2000 lossless and
JPEG 2000 lossy DICOMs, then times, per format:
- naive: one process; pydicom read, min-max to 8 bit, Pillow bicubic resize, PNG save;
- decode-bound: pydicom read + ``pixel_array`` alone, spread over the workers (the
  limit no preprocessing can beat);
- project: ``benchmark.data.preprocess.preprocess`` with ``--workers`` processes.
It prints images/s and the ratios project/naive and project/decode-bound, and checks
that the output is identical for 1 and N workers and for lossless JPEG 2000 and
uncompressed copies of the same images.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from PIL import Image

from benchmark.data.dicom_io import stable_uid, write_mammogram
from benchmark.data.preprocess import PreprocessSettings, preprocess
from benchmark.data.render import Machine, render_breast, to_stored_values
from benchmark.data.synth import lesion_for_birads

SHAPE = (3328, 2560)
FORMATS = ("uncompressed", "j2k_lossless", "j2k_lossy")


def write_images(folder: Path, n: int) -> None:
    for i in range(n):
        rng = np.random.default_rng([7, i])
        lesion, _ = lesion_for_birads(rng, int(rng.integers(1, 6)), seed=i)
        image = render_breast(rng, SHAPE, "CC" if i % 2 else "MLO", "L" if i % 3 else "R", 1 + i % 4, lesion)
        machine = Machine(gain=0.85, offset=0.03, noise=0.01, bits=12,
                          photometric="MONOCHROME1" if i % 4 == 3 else "MONOCHROME2")
        stored = to_stored_values(rng, image, machine)
        for fmt in FORMATS:
            write_mammogram(folder / fmt / f"img{i:03d}.dcm", stored, bits_stored=12, patient_id=str(i),
                            study_uid=stable_uid("bench", i), series_uid=stable_uid("bench", i, "s"),
                            sop_uid=stable_uid("bench", i, fmt), laterality="L", view="CC",
                            photometric=machine.photometric, transfer_syntax=fmt)


def naive_one(args) -> None:
    path, out, long_side = args
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float64)
    pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255
    image = Image.fromarray(pixels.astype(np.uint8))
    scale = long_side / max(image.size)
    image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC).save(out)


def decode_one(path: Path) -> int:
    return int(pydicom.dcmread(path).pixel_array.shape[0])


def _records(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("*.dcm"))
    return pd.DataFrame({"dataset": "bench", "image_id": [f.stem for f in files],
                         "dicom_path": [f.name for f in files], "laterality": "L"})


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for png in sorted(folder.glob("images/*.png")):
        h.update(png.read_bytes())
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--long-side", type=int, default=1024)
    args = parser.parse_args()
    settings = PreprocessSettings(long_side=args.long_side)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"writing {args.images} mammograms of {SHAPE[0]} x {SHAPE[1]}, 12 bit, in {len(FORMATS)} formats ...")
        write_images(tmp / "dicom", args.images)
        digests = {}
        print(f"{'format':<14}{'naive img/s':>12}{'decode-bound':>14}{'project':>10}{'x naive':>9}{'% of bound':>12}")
        for fmt in FORMATS:
            src = tmp / "dicom" / fmt
            files = sorted(src.glob("*.dcm"))
            for f in files:  # warm the page cache for every contender alike
                f.read_bytes()
            start = time.perf_counter()
            (tmp / f"naive_{fmt}").mkdir()
            for f in files:
                naive_one((f, tmp / f"naive_{fmt}" / f"{f.stem}.png", args.long_side))
            naive = len(files) / (time.perf_counter() - start)

            start = time.perf_counter()
            with ProcessPoolExecutor(max_workers=args.workers) as pool:
                list(pool.map(decode_one, files))
            bound = len(files) / (time.perf_counter() - start)

            start = time.perf_counter()
            manifest, failed = preprocess(_records(src), src, tmp / f"ours_{fmt}", settings, workers=args.workers)
            ours = len(files) / (time.perf_counter() - start)
            assert failed.empty and len(manifest) == len(files), failed
            digests[fmt] = _digest(tmp / f"ours_{fmt}")
            print(f"{fmt:<14}{naive:>12.2f}{bound:>14.2f}{ours:>10.2f}{ours / naive:>9.1f}{100 * ours / bound:>11.0f}%")

        preprocess(_records(tmp / "dicom/uncompressed"), tmp / "dicom/uncompressed", tmp / "one_worker", settings,
                   workers=1)
        same_workers = _digest(tmp / "one_worker") == digests["uncompressed"]
        same_codec = digests["j2k_lossless"] == digests["uncompressed"]
        print(f"identical output for 1 and {args.workers} workers: {same_workers}")
        print(f"identical output for JPEG 2000 lossless and uncompressed: {same_codec}")


if __name__ == "__main__":
    main()
