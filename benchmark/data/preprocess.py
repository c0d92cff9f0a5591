"""DICOM to PNG cache: modality LUT, MONOCHROME1 inversion, optional VOI LUT, breast
crop, long-side area resize, 8- or 16-bit PNG (docs/protocol.md, Data).

Speed comes from doing the full-resolution work once, on stored integers: native
(uncompressed) pixel data is read zero-copy, the breast box is found on a subsampled
copy, and the crop is shrunk with Pillow's box filter (area interpolation, in C).
Everything per-pixel after that (rescale, inversion, windowing, normalisation) runs on
the small image. The rescale and inversion are linear, so doing them after the area
average gives the same result; a VOI window clips, so windowing after averaging differs
from windowing before it only in pixels whose neighbourhood straddles the window edge.

The cache is resumable: a PNG written with the same settings (``settings.json`` in the
cache folder) is kept. A file that cannot be read becomes an exclusion with its reason.
Output does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pydicom.errors
from PIL import Image
from pydicom.pixels import apply_voi_lut
from scipy import ndimage
from tqdm import tqdm

from benchmark.data.tables import EXCLUSION_COLUMNS, exclusion, resolve_under_root, safe_name


@dataclass(frozen=True)
class PreprocessSettings:
    long_side: int = 256
    bits: int = 8
    voi_lut: bool = False
    crop: bool = True
    flip_to_left: bool = False  # optional canonical orientation (chest wall on the left)


class UnusableImage(ValueError):
    """A DICOM that is read but cannot be a grey mammogram; the message is the reason."""


def check_usable(ds: pydicom.Dataset) -> None:
    """Say in words why a file cannot be used, before any decoding."""
    if "PixelData" not in ds:
        raise UnusableImage("no pixel data")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise UnusableImage(f"colour image ({ds.get('PhotometricInterpretation', '?')}, "
                            f"{ds.SamplesPerPixel} samples per pixel), not a grey mammogram")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise UnusableImage(f"multi-frame image ({ds.NumberOfFrames} frames, e.g. tomosynthesis)")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_compressed:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        expected = int(ds.Rows) * int(ds.Columns) * ((bits + 7) // 8)
        length = len(ds.PixelData)
        if length < expected or length > expected + 1:  # pydicom allows one padding byte
            raise UnusableImage(f"pixel data holds {length} bytes, but Rows x Columns x {bits} bits needs "
                                f"{expected}")


def stored_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """The stored values of a single-frame grey image; native data without a copy."""
    check_usable(ds)
    native = not ds.file_meta.TransferSyntaxUID.is_compressed
    if native and ds.BitsAllocated == 16 and ds.PixelRepresentation == 0 and ds.SamplesPerPixel == 1:
        rows, cols = int(ds.Rows), int(ds.Columns)
        data = np.frombuffer(ds.PixelData, dtype="<u2", count=rows * cols)
        return data.reshape(rows, cols)
    return ds.pixel_array


def unreadable_reason(exc: Exception, path: Path) -> str:
    """An exclusion reason a person understands, for an exception raised reading ``path``."""
    if isinstance(exc, UnusableImage):
        return str(exc)
    if isinstance(exc, pydicom.errors.InvalidDicomError):
        return "not a DICOM file (no DICM header)"
    if isinstance(exc, (EOFError, OSError)) and not isinstance(exc, FileNotFoundError):
        return f"truncated or unreadable file ({type(exc).__name__})"
    message = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    try:
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    except Exception:
        syntax = None
    if syntax is not None and syntax.is_compressed:
        return f"cannot decode transfer syntax {syntax.name} ({message})"
    return f"unreadable DICOM ({type(exc).__name__}: {message})"


def _bright_is_dense(ds: pydicom.Dataset) -> bool:
    """True where larger rescaled values mean denser tissue (MONOCHROME2, positive slope)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    monochrome1 = str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1"
    return (slope > 0) != monochrome1


def breast_box(stored: np.ndarray, bright_is_dense: bool, step: int = 8) -> tuple[slice, slice]:
    """Bounding box of the largest tissue component, found on a subsampled copy."""
    small = stored[::step, ::step].astype(np.float32)
    if not bright_is_dense:
        small = -small
    lo, hi = float(small.min()), float(small.max())
    mask = small > lo + 0.1 * (hi - lo)
    labels, n = ndimage.label(mask)
    if n == 0:
        return slice(0, stored.shape[0]), slice(0, stored.shape[1])
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    rows, cols = ndimage.find_objects((labels == 1 + int(np.argmax(sizes))).astype(np.int8))[0]
    return (slice(max(0, (rows.start - 1) * step), min(stored.shape[0], (rows.stop + 1) * step)),
            slice(max(0, (cols.start - 1) * step), min(stored.shape[1], (cols.stop + 1) * step)))


def area_resize(image: np.ndarray, long_side: int) -> np.ndarray:
    """Resize so the long side is ``long_side``, with area (box) interpolation; float32 out.

    Unsigned 16-bit data is resized as Pillow's I;16 (no full-size float copy)."""
    h, w = image.shape
    scale = long_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if image.dtype == np.uint16:
        pil = Image.fromarray(np.ascontiguousarray(image))
    else:
        pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F")
    return np.asarray(pil.resize(size, Image.Resampling.BOX), dtype=np.float32)


def to_display(ds: pydicom.Dataset, values: np.ndarray, voi_lut: bool) -> np.ndarray:
    """Rescaled (and optionally windowed) values where bright means dense tissue."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = values * slope + intercept
    if voi_lut and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        values = apply_voi_lut(values, ds).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
        values = values.max() - values
    return values


def convert(dicom_path: Path, png_path: Path, settings: PreprocessSettings, laterality: str) -> tuple[int, int]:
    ds = pydicom.dcmread(dicom_path)
    stored = stored_pixels(ds)
    if settings.crop:
        stored = stored[breast_box(stored, _bright_is_dense(ds))]
    image = to_display(ds, area_resize(stored, settings.long_side), settings.voi_lut)
    if settings.flip_to_left and laterality == "R":
        image = image[:, ::-1]
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    top = 2**settings.bits - 1
    out = np.clip(np.round(image * top), 0, top).astype(np.uint8 if settings.bits == 8 else np.uint16)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.stem}.{os.getpid()}.tmp.png")
    Image.fromarray(out).save(tmp, compress_level=1)
    tmp.replace(png_path)  # atomic: an interrupted run never leaves half a PNG
    return out.shape


def _convert_one(args) -> str | None:
    dicom_path, png_path, settings, laterality = args
    if png_path.exists():
        return None
    try:
        convert(dicom_path, png_path, settings, laterality)
    except Exception as exc:  # any unreadable file is recorded, never fatal
        return unreadable_reason(exc, dicom_path)
    return None


def cache_name(image_id: str) -> str:
    """The cached PNG's file name: the image id when it is a plain name, else a hash of it
    (an id never chooses where a file is written)."""
    if safe_name(str(image_id)):
        return f"{image_id}.png"
    return f"id-{hashlib.sha256(str(image_id).encode()).hexdigest()[:24]}.png"


def preprocess(records: pd.DataFrame, data_root: Path, cache_dir: Path, settings: PreprocessSettings,
               workers: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert every record's DICOM; return (manifest, exclusions) for this stage."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    settings_file = cache_dir / "settings.json"
    wanted = json.dumps(asdict(settings), sort_keys=True)
    if settings_file.exists() and settings_file.read_text() != wanted:
        for old in (cache_dir / "images").glob("*.png"):  # other settings: start over
            old.unlink()
    settings_file.write_text(wanted)

    jobs, excluded, keep = [], [], []
    for row in records.itertuples(index=False):
        dicom = resolve_under_root(data_root, row.dicom_path)
        if dicom is None:
            excluded.append(exclusion(row.dataset, row.image_id, row.dicom_path, "all", "path escapes the data root"))
            continue
        if not dicom.is_file():
            excluded.append(exclusion(row.dataset, row.image_id, row.dicom_path, "all", "DICOM file not found"))
            continue
        if dicom.stat().st_size == 0:
            excluded.append(exclusion(row.dataset, row.image_id, row.dicom_path, "all", "zero-byte DICOM file"))
            continue
        png = cache_dir / "images" / cache_name(row.image_id)
        jobs.append((dicom, png, settings, row.laterality))
        keep.append(row)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            errors = list(tqdm(pool.map(_convert_one, jobs, chunksize=1), total=len(jobs), desc="preprocess"))
    else:
        errors = [_convert_one(job) for job in tqdm(jobs, desc="preprocess")]
    rows = []
    for row, error in zip(keep, errors):
        if error:
            excluded.append(exclusion(row.dataset, row.image_id, row.dicom_path, "all", error))
        else:
            rows.append(row._asdict() | {"png": f"images/{cache_name(row.image_id)}"})
    return pd.DataFrame(rows), pd.DataFrame(excluded, columns=EXCLUSION_COLUMNS)
