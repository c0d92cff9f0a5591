"""GLAM's alignment of an MLO view to the CC orientation: the official
``scripts/align_mlo_mammo.py`` (XYPB/GLAM), written with scikit-image and scipy.

In an MLO view the pectoral muscle's edge is a line across the upper chest-wall corner; a
CC view has no such corner. Rotating the MLO image so that this edge stands vertical puts
the two views' columns roughly at the same depth from the chest wall, which GLAM's
per-column cross-view attention relies on. The steps, on a grey image with the official
constants (the official code ran on images with a long side of 1024; thresholds in pixels
are scaled by ``long side / 1024`` here, so that a cache at any size behaves alike):

1. orient the breast to the left: flip when the left half has fewer non-zero pixels;
2. remove text labels: zero the bounding box of every connected component of the non-zero
   mask (grown by the official 5 x 5 blur, two pixels) smaller than 10,000 pixels;
3. crop to the bounding box of the pixels above Otsu's threshold;
4. equalise the histogram; Canny edges (sigma 6) of the image with its bottom 10 % masked,
   then their Sobel magnitude;
5. Hough lines; keep those whose normal is 10 to 60 degrees from the horizontal and whose
   distance from the top-left corner is 1 % to 60 % of the width (and 5 to 300 pixels);
6. of those, the line whose upper-left triangle (the muscle) has the smallest standard
   deviation of its non-zero pixels;
7. rotate counter-clockwise by its angle about the point where it meets the line x = 0, on
   a canvas twice as wide, and crop again as in 3: the muscle's edge now stands on the
   chest wall and the muscle itself is turned out of the image (the official figure's
   "pectoral muscle removed"); with no line, rotate by the official 18 degrees about the middle of the
   left edge;
8. flip back if step 1 flipped.

tests/test_mlo_alignment.py recovers a synthetic muscle's angle to within a degree at long
sides of 128 to 512 pixels. At 1024 the horizontal edge that the bottom mask itself makes
can dominate the Hough accumulator (peaks below half its maximum are dropped), so that on
those synthetic images only lines of 40 degrees and more qualify; the official code masks
the same way (it was not run here: it needs OpenCV).

The workflow's ``align_mlo`` rule runs ``align_cached_mlo_views`` on the pretraining
dataset's cache when a configured model asks for ``mlo_view`` (GLAM), and pretraining reads
the aligned image wherever an MLO view is that field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

OFFICIAL_LONG_SIDE = 1024  # the official script's input size: its pixel constants are at this scale
LABEL_AREA = 1e4  # text-label components smaller than this (pixels at 1024) are removed
CANNY_SIGMA = 6.0
MASK_BOTTOM = 0.1  # the share of rows at the bottom masked before edge detection
ANGLES = (10.0, 60.0)  # degrees: the pectoral line's normal against the horizontal
DISTANCE_PX = (5.0, 300.0)  # pixels at 1024
DISTANCE_OF_WIDTH = (0.01, 0.60)
FALLBACK_ANGLE = 18.0  # the official rotation when no line qualifies


@dataclass(frozen=True)
class Alignment:
    image: np.ndarray  # the aligned image, of the input's integer type, cropped to the breast
    angle: float  # degrees of the counter-clockwise rotation applied
    found_line: bool  # False: no pectoral line qualified and the fallback angle was used


def _otsu_crop(image: np.ndarray) -> np.ndarray:
    from skimage.filters import threshold_otsu

    if image.max() == image.min():
        return image
    mask = image > threshold_otsu(image)
    if not mask.any():
        return image
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _remove_labels(image: np.ndarray, min_area: float) -> np.ndarray:
    grown = ndimage.binary_dilation(image > 0, iterations=2)
    labels, _ = ndimage.label(grown, structure=np.ones((3, 3)))
    out = image.copy()
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None and (labels[box] == index).sum() < min_area:
            out[box] = 0
    return out


def _hough_lines(edges: np.ndarray) -> list[tuple[float, float]]:
    """(angle in degrees, distance) of the Hough peaks, angles at least 1e-3 rad as the
    official code clamps them."""
    from skimage.transform import hough_line, hough_line_peaks

    accumulator, angles, distances = hough_line(edges)
    return [(float(np.degrees(max(angle, 1e-3))), float(dist))
            for _, angle, dist in zip(*hough_line_peaks(accumulator, angles, distances))]


def _muscle_pixels(image: np.ndarray, angle: float, dist: float) -> np.ndarray:
    """The non-zero pixels of the triangle between the line and the top-left corner."""
    from skimage.draw import polygon

    theta = np.radians(angle)
    rows, cols = polygon([0, 0, dist / np.sin(theta)], [0, dist / np.cos(theta), 0])
    values = image[np.clip(rows, 0, image.shape[0] - 1), np.clip(cols, 0, image.shape[1] - 1)]
    return values[values > 0]


def pectoral_line(image: np.ndarray) -> tuple[float, float] | None:
    """(angle, distance) of the pectoral muscle's edge in a left-oriented, cropped image
    (steps 4 to 6 of the module docstring), or None when no Hough line qualifies."""
    from skimage.exposure import equalize_hist
    from skimage.feature import canny
    from skimage.filters import sobel

    scale = max(image.shape) / OFFICIAL_LONG_SIDE
    enhanced = equalize_hist(image)
    enhanced[int(image.shape[0] * (1 - MASK_BOTTOM)):] = 0
    edges = sobel(canny(enhanced, sigma=max(CANNY_SIGMA * scale, 1.0)).astype(float))
    width = image.shape[1]
    low = max(DISTANCE_PX[0] * scale, DISTANCE_OF_WIDTH[0] * width)
    high = min(DISTANCE_PX[1] * scale, DISTANCE_OF_WIDTH[1] * width)
    candidates = [(a, d) for a, d in _hough_lines(edges) if low <= d <= high and ANGLES[0] <= a <= ANGLES[1]]
    if not candidates:
        return None
    spread = []
    for angle, dist in candidates:
        muscle = _muscle_pixels(image, angle, dist)
        spread.append(np.std(muscle) if muscle.size else np.inf)
    return candidates[int(np.argmin(spread))]


def align_mlo_to_cc(pixels: np.ndarray) -> Alignment:
    """Steps 1 to 8 of the module docstring on a (H, W) uint8 or uint16 image (the cache's
    8 or 16 bits; the official code read 8-bit JPEGs)."""
    from skimage.transform import rotate

    half = pixels.shape[1] // 2
    flipped = np.count_nonzero(pixels[:, :half]) < np.count_nonzero(pixels[:, half:])
    image = pixels[:, ::-1] if flipped else pixels
    scale = max(image.shape) / OFFICIAL_LONG_SIDE
    image = _otsu_crop(_remove_labels(image, LABEL_AREA * scale ** 2))
    line = pectoral_line(image)
    if line is None:
        angle, center = FALLBACK_ANGLE, (0.0, image.shape[0] // 2)
    else:
        angle, dist = line
        center = (0.0, dist / np.sin(np.radians(angle)))  # where the line meets x = 0, as the official code takes it
    canvas = np.zeros((image.shape[0], 2 * image.shape[1]), dtype=float)
    canvas[:, : image.shape[1]] = image
    turned = rotate(canvas, angle, center=center, order=1, preserve_range=True)  # counter-clockwise, (x, y) centre
    aligned = _otsu_crop(np.clip(np.rint(turned), 0, np.iinfo(pixels.dtype).max).astype(pixels.dtype))
    return Alignment(np.ascontiguousarray(aligned[:, ::-1] if flipped else aligned), float(angle), line is not None)


ALIGNED_DIR = "mlo_to_cc"  # in the cache folder, beside the images it aligns


def align_cached_mlo_views(manifest: pd.DataFrame, cache_dir: Path, out_csv: Path) -> pd.DataFrame:
    """Every MLO image of a preprocessed dataset aligned to the CC orientation, written as a
    PNG of the cache's bit depth under ``<cache>/mlo_to_cc/`` (same relative name), and the
    table ``image_id, png, angle, found_line`` (written to ``out_csv``): what GLAM's
    ``mlo_view`` reads. Images of other views are not listed."""
    from PIL import Image

    cache_dir = Path(cache_dir)
    rows = []
    for rec in manifest[manifest["view"] == "MLO"].itertuples():
        pixels = np.asarray(Image.open(cache_dir / rec.png))
        if pixels.dtype not in (np.uint8, np.uint16):  # PIL reads some 16-bit PNGs as 32-bit integers
            pixels = pixels.astype(np.uint16)
        result = align_mlo_to_cc(pixels)
        relative = Path(ALIGNED_DIR) / rec.png
        (cache_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(result.image).save(cache_dir / relative)
        rows.append({"image_id": rec.image_id, "png": relative.as_posix(), "angle": round(result.angle, 3),
                     "found_line": result.found_line})
    table = pd.DataFrame(rows, columns=["image_id", "png", "angle", "found_line"])
    tmp = Path(out_csv).with_suffix(".csv.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out_csv)
    return table
