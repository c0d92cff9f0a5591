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
cache folder) after its DICOM last changed is kept. A file that cannot be read becomes an
exclusion with its reason.
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

from benchmark.data.dicom_io import read_dicom
from benchmark.data.tables import EXCLUSION_COLUMNS, exclusion, resolve_under_root, safe_name
from benchmark.errors import BenchmarkError


@dataclass(frozen=True)
class PreprocessSettings:
    long_side: int = 256
    bits: int = 8
    voi_lut: bool = False
    crop: bool = True
    flip_to_left: bool = False  # optional canonical orientation (chest wall on the left)


# Bump when the conversion changes what a cached PNG holds for the same settings: the
# cache (settings.json) and the workflow (the preprocess rule's params) then redo it.
CACHE_FORMAT = 2  # 2: breast found as a body of tissue (Otsu, opening), scaled by its own range


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


# Breast finding (docs/protocol.md, Data). Constants are fractions of the working copy.
WORK_SIDE = 256          # the breast is found on a copy subsampled to at most this long side
SATURATED = 0.002        # values within this fraction of the range below the maximum are burned-in
                         # labels, lead markers or unexposed film, never tissue
OPENING = 0.02           # opening radius, fraction of the short side: removes film edges, text
                         # strokes and necks narrower than about twice this


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (Otsu 1979);
    values above it are foreground. Constant values have no foreground."""
    if values.min() == values.max():
        return float(values.max())
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts).astype(np.float64)
    above = below[-1] - below
    mass_below = np.cumsum(counts * centres)
    mean_below = mass_below / np.maximum(below, 1)
    mean_above = (mass_below[-1] - mass_below) / np.maximum(above, 1)
    between = below * above * (mean_below - mean_above) ** 2
    return float(edges[1 + int(np.argmax(between[:-1]))])


def _opened(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening with a square, the image edge counted as background (so a band along
    an edge thinner than the square goes, while tissue touching the edge comes back)."""
    size = 2 * radius + 1
    eroded = ndimage.minimum_filter(mask.astype(np.uint8), size=size, mode="constant", cval=0)
    return ndimage.maximum_filter(eroded, size=size, mode="constant", cval=0).astype(bool)


def breast_region(stored: np.ndarray, bright_is_dense: bool) -> tuple[tuple[slice, slice], np.ndarray]:
    """The breast's bounding box in ``stored``, and its tissue mask on a subsampled copy of
    that box (for intensity scaling).

    The breast is a body of tissue, not everything bright: (1) burned-in labels, lead
    markers and unexposed film edges sit at the top of the range and are set aside (unless
    they are most of the foreground, as in flat phantoms); (2) an Otsu threshold over the
    rest separates tissue from background; (3) holes are filled; (4) an opening, with the
    image edge as background, drops film edges, text strokes and thin necks to markers
    touching the skin line; (5) the largest component, with the tissue within the opening
    radius of it (what the opening trimmed), is the breast, and its box is the crop. The
    breast touches the chest-wall edge, so unlike a generic "largest component not touching
    the edge" rule, edge contact is allowed; thin edge bands go in step 4 instead.
    """
    whole = (slice(0, stored.shape[0]), slice(0, stored.shape[1]))
    step = max(1, -(-max(stored.shape) // WORK_SIDE))
    small = stored[::step, ::step].astype(np.float32)
    if not bright_is_dense:
        small = -small
    lo, hi = float(small.min()), float(small.max())
    if hi <= lo:
        return whole, np.ones(small.shape, bool)
    artefact = small >= hi - SATURATED * (hi - lo)
    foreground = (small > otsu_threshold(small[~artefact])) & ~artefact if (~artefact).any() else artefact
    if foreground.sum() < artefact.sum():  # the flat bright region is the object itself (a phantom)
        artefact[:] = False
        foreground = small > otsu_threshold(small)
    tissue = ndimage.binary_fill_holes(foreground)
    radius = max(1, round(OPENING * min(small.shape)))
    labels, n = ndimage.label(_opened(tissue, radius))
    if n == 0:  # nothing survives the opening (tiny images): the largest raw component
        labels, n = ndimage.label(tissue)
    if n == 0:
        return whole, np.ones(small.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == 1 + int(np.argmax(sizes))
    # Thin tissue the opening trimmed (nipple, skin line) is back; artefacts are not.
    near_body = ndimage.maximum_filter(body.astype(np.uint8), size=2 * radius + 1).astype(bool)
    breast = tissue & near_body
    rows, cols = ndimage.find_objects(breast.astype(np.int8))[0]
    r0, r1 = max(0, rows.start - 1), min(small.shape[0], rows.stop + 1)  # one working pixel of margin
    c0, c1 = max(0, cols.start - 1), min(small.shape[1], cols.stop + 1)
    box = (slice(r0 * step, min(stored.shape[0], r1 * step)), slice(c0 * step, min(stored.shape[1], c1 * step)))
    mask = breast[r0:r1, c0:c1]
    return box, mask


def breast_range(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(low, high) for min-max scaling: the darkest value of the crop and the brightest value
    of the breast's own tissue, so labels and markers left in the box do not set the scale.
    The mask is eroded by one output pixel per mask pixel so edges blurred into an artefact
    by the area resize do not count either."""
    grid = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(image.shape[::-1], Image.Resampling.NEAREST), bool)
    margin = -(-image.shape[0] // mask.shape[0])
    inner = ndimage.minimum_filter(grid.astype(np.uint8), size=2 * margin + 1).astype(bool)
    tissue = image[inner] if inner.any() else image
    return float(image.min()), float(tissue.max())


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
    ds = read_dicom(dicom_path)
    stored = stored_pixels(ds)
    mask = None
    if settings.crop:
        box, mask = breast_region(stored, _bright_is_dense(ds))
        stored = stored[box]
    image = to_display(ds, area_resize(stored, settings.long_side), settings.voi_lut)
    lo, hi = breast_range(image, mask) if mask is not None else (float(image.min()), float(image.max()))
    if settings.flip_to_left and laterality == "R":
        image = image[:, ::-1]
    image = np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)
    top = 2**settings.bits - 1
    out = np.clip(np.round(image * top), 0, top).astype(np.uint8 if settings.bits == 8 else np.uint16)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.stem}.{os.getpid()}.tmp.png")
    Image.fromarray(out).save(tmp, compress_level=1)
    tmp.replace(png_path)  # atomic: an interrupted run never leaves half a PNG
    return out.shape


def cached_png_is_current(dicom_path: Path, png_path: Path) -> bool:
    """A cached PNG is kept only if it was written after its DICOM last changed: a DICOM
    regenerated or replaced under the same image id (a new synthetic data version, a
    corrected file) is converted again. The DICOM's ctime counts too, since a copy that
    keeps the original mtime (``cp -p``, ``rsync -a``) still sets it."""
    if not png_path.exists():
        return False
    dicom = dicom_path.stat()
    return png_path.stat().st_mtime_ns > max(dicom.st_mtime_ns, dicom.st_ctime_ns)


def _convert_one(args) -> str | None:
    dicom_path, png_path, settings, laterality = args
    if cached_png_is_current(dicom_path, png_path):
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
    wanted = json.dumps(asdict(settings) | {"cache_format": CACHE_FORMAT}, sort_keys=True)
    if settings_file.exists() and settings_file.read_text() != wanted:
        for old in (cache_dir / "images").glob("*.png"):  # other settings: start over
            old.unlink()
    settings_file.write_text(wanted)
    names = records["image_id"].astype(str).map(cache_name).str.lower()
    if names.duplicated().any():  # distinct ids must never share a cache file (case-insensitive file systems too)
        clash = records["image_id"][names.duplicated(keep=False).to_numpy()].astype(str).tolist()[:4]
        raise BenchmarkError(f"preprocess: image ids {clash} map to one cache file name; rename one of them")

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
