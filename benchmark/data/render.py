"""Render synthetic mammograms: breast shape, fibroglandular texture, lesions, detector.

Pixel values are in "attenuation" units (0 = air, about 1 = densest tissue) until
``to_stored_values`` applies a machine's gain, offset, noise and bit depth.

What a model can learn, and why it is not a one-pixel shortcut:
- density sets the fraction of the breast covered by fibroglandular texture and its
  contrast, with jitter so neighbouring density grades overlap (a global feature);
- lesions (masses with round / oval / irregular outlines and circumscribed / indistinct /
  spiculated margins, coarse scattered or fine clustered / linear calcifications, a biopsy
  clip) follow the breast's BI-RADS level and appear in both views of that breast at
  consistent positions. Every lesion class draws its size and brightness from the same
  ranges, so the class is only in local evidence, drawn large enough to survive the tiny
  models' 96 px input (spicules and calcifications about one pixel there);
- breast size and shape, pectoral muscle (MLO), machine gain / offset / noise and bit
  depth vary from image to image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Fraction of the breast covered by dense tissue for density grades 1..4 (mean, sd).
DENSE_FRACTION = {1: (0.10, 0.05), 2: (0.28, 0.07), 3: (0.50, 0.08), 4: (0.72, 0.07)}
DENSE_CONTRAST = {1: 0.10, 2: 0.14, 3: 0.18, 4: 0.21}
# Lesions (docs/synthetic-data.md, truth table): the classes differ in outline, margin and
# calcifications, not in size or brightness.
CALC_BRIGHTNESS = 0.3  # every calcification, above the tissue
SPICULE_HALF_WIDTH = 3 / 512  # fraction of image height: about one pixel wide at 96 px
BENIGN_MARK_HALF_WIDTH = 2 / 512  # fraction of image height: 5 x 5 px at 512, kept whole by the cache's 2x resize


@dataclass
class Lesion:
    """A lesion of one breast, shared by that breast's views.

    ``depth`` is the distance from the chest wall as a fraction of breast depth,
    ``height`` the vertical position in [-1, 1] of the breast's half-height.
    """

    kind: str  # "mass", "calc", "mass+calc", "asymmetry", "none"
    radius: float = 0.0  # fraction of image height
    shape: str = "round"  # round, oval, irregular
    margin: str = "circumscribed"  # circumscribed, indistinct, spiculated
    amplitude: float = 0.0
    n_calcs: int = 0
    calc_size: float = 2.0  # half-width in pixels at 512 rows; coarse benign calcs are bigger
    calc_spread: float = 0.04  # cluster radius (or half the line's length), fraction of image height
    calc_linear: bool = False  # calcifications along a line instead of a cluster
    clip: bool = False  # biopsy clip marker (BI-RADS 6)
    depth: float = 0.5
    height: float = 0.0
    seed: int = 0


@dataclass
class Machine:
    """Detector and DICOM conventions of one mammography unit."""

    gain: float
    offset: float
    noise: float
    bits: int = 12
    name: str = "m0"
    photometric: str = "MONOCHROME2"  # MONOCHROME1 stores bright tissue as low values
    intercept: float = 0.0  # RescaleIntercept: stored = value - intercept
    transfer_syntax: str = "uncompressed"  # or "j2k_lossless", "j2k_lossy", "rle"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Band-limited noise in [0, 1] at roughly ``scale`` pixels, generated at low resolution."""
    factor = max(1, int(scale // 2))
    small = (max(4, shape[0] // factor), max(4, shape[1] // factor))
    noise = ndimage.gaussian_filter(rng.standard_normal(small), sigma=2.0)
    noise = ndimage.zoom(noise, (shape[0] / small[0], shape[1] / small[1]), order=1)
    noise = noise[: shape[0], : shape[1]]
    lo, hi = np.percentile(noise, [1, 99])
    return np.clip((noise - lo) / (hi - lo + 1e-9), 0, 1)


def breast_mask(rng: np.random.Generator, shape: tuple[int, int], view: str):
    """Soft breast mask (chest wall at column 0), plus coordinates used to place lesions."""
    rows, cols = shape
    depth = rng.uniform(0.55, 0.85) * cols
    half_height = rng.uniform(0.34, 0.46) * rows
    centre = rows / 2 + rng.uniform(-0.06, 0.06) * rows
    if view == "MLO":
        half_height *= 1.1
        centre += 0.05 * rows
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    # Slightly asymmetric ellipse: the nipple sits a bit off the mid line.
    skew = rng.uniform(-0.15, 0.15)
    yy = (y - centre) / half_height + skew * (x / depth) ** 2
    r = np.sqrt((x / depth) ** 2 + yy**2)
    # Thickness falls off towards the skin line, so intensity does too.
    mask = np.clip((1.0 - r) / 0.08, 0, 1) ** 0.7
    if view == "MLO":
        # Pectoral muscle: a bright triangle in the upper chest-wall corner.
        pec_w = rng.uniform(0.25, 0.4) * cols
        pec_h = rng.uniform(0.45, 0.7) * rows
        pec = np.clip((1 - x / pec_w - y / pec_h) / 0.03, 0, 1)
        mask = np.maximum(mask, pec * 1.0)
    else:
        pec = np.zeros_like(mask)
    geometry = {"depth": depth, "half_height": half_height, "centre": centre}
    return mask.astype(np.float32), pec.astype(np.float32), geometry


def _mass_shape(lesion: Lesion, shape, cy: float, cx: float, rng: np.random.Generator) -> np.ndarray:
    """The mass's outline and margin, peak 1.5 (times the lesion's amplitude when drawn)."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    radius = lesion.radius * rows
    dy, dx = (y - cy), (x - cx)
    angle = np.arctan2(dy, dx)
    if lesion.shape == "oval":
        dist = np.sqrt((dx / np.sqrt(1.5)) ** 2 + (dy * np.sqrt(1.5)) ** 2)  # the disc's area, 1.5:1
    elif lesion.shape == "irregular":
        wobble = 1 + 0.3 * np.sin(3 * angle + rng.uniform(0, 6)) + 0.2 * np.sin(5 * angle + rng.uniform(0, 6))
        dist = np.sqrt(dx**2 + dy**2) / wobble
    else:
        dist = np.sqrt(dx**2 + dy**2)
    edge = {"circumscribed": 0.08, "indistinct": 0.35, "spiculated": 0.2}[lesion.margin]
    body = np.clip((1 - dist / radius) / edge, 0, 1) * 1.5
    if lesion.margin == "spiculated":
        half_width = SPICULE_HALF_WIDTH * rows
        spikes = np.zeros_like(body)
        for theta in rng.uniform(0, 2 * np.pi, size=rng.integers(6, 11)):
            along = dx * np.cos(theta) + dy * np.sin(theta)
            across = np.abs(-dx * np.sin(theta) + dy * np.cos(theta))
            length = radius * rng.uniform(1.6, 2.6)
            line = (along > 0) & (along < length)
            spikes = np.maximum(spikes, line * np.clip(1 - across / half_width, 0, 1) * (1 - along / length))
        body = np.maximum(body, spikes)
    return body


def _draw_lesion(image: np.ndarray, mask: np.ndarray, lesion: Lesion, cy: float, cx: float,
                 rng: np.random.Generator) -> None:
    rows, cols = image.shape
    if "mass" in lesion.kind or lesion.kind == "asymmetry":
        image += _mass_shape(lesion, (rows, cols), cy, cx, rng) * lesion.amplitude * (mask > 0.2)
    if "calc" in lesion.kind:
        size = max(1, int(round(lesion.calc_size * rows / 512)))
        spread = lesion.calc_spread * rows
        direction = rng.uniform(0, np.pi)
        for k in range(lesion.n_calcs):
            if lesion.calc_linear:  # along a line (a duct), as linear or segmental calcifications
                t = (k / max(1, lesion.n_calcs - 1) - 0.5) * 4 * spread
                py, px = cy + t * np.sin(direction) + rng.normal(0, 1), cx + t * np.cos(direction) + rng.normal(0, 1)
            else:
                py, px = cy + rng.normal(0, spread), cx + rng.normal(0, spread)
            py, px = int(np.clip(py, 0, rows - 1)), int(np.clip(px, 0, cols - 1))
            image[max(0, py - size): py + size + 1, max(0, px - size): px + size + 1] += CALC_BRIGHTNESS


def _draw_benign_marks(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """Two to four small, fully bright benign calcifications (vascular or skin) in every breast,
    whatever its labels. The preprocessing scales each image to its breast's brightest pixel
    (min-max); without them that pixel is a lesion's calcification or clip when the breast has
    one, and the scaling darkens the whole image by its label: a global shortcut."""
    rows, cols = image.shape
    inside = np.argwhere(mask > 0.6)
    if not len(inside):
        return
    half = max(1, round(BENIGN_MARK_HALF_WIDTH * rows))
    for y, x in inside[rng.choice(len(inside), size=int(rng.integers(2, 5)))]:
        image[max(0, y - half): y + half + 1, max(0, x - half): x + half + 1] = 1.0


def render_breast(
    rng: np.random.Generator,
    shape: tuple[int, int],
    view: str,
    laterality: str,
    density: int,
    lesion: Lesion,
    density_fraction: float | None = None,
) -> np.ndarray:
    """One view of one breast in attenuation units, chest wall on the side of ``laterality``."""
    rows, cols = shape
    mask, pec, geo = breast_mask(rng, shape, view)
    fraction = density_fraction
    if fraction is None:
        mean, sd = DENSE_FRACTION[density]
        fraction = float(np.clip(rng.normal(mean, sd), 0.02, 0.95))
    contrast = DENSE_CONTRAST[density] * rng.uniform(0.8, 1.2)
    texture = 0.6 * _smooth_noise(rng, shape, 24) + 0.4 * _smooth_noise(rng, shape, 6)
    # Dense tissue concentrates behind the nipple, away from the skin line.
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    prior = np.exp(-(((y - geo["centre"]) / (0.8 * geo["half_height"])) ** 2)) * np.clip(
        1.2 - x / geo["depth"], 0, 1
    )
    field_ = texture * (0.5 + 0.5 * prior)
    inside = mask > 0.5
    threshold = np.quantile(field_[inside], 1 - fraction) if inside.any() else 1.0
    dense = np.clip((field_ - threshold) / 0.2 + 0.3, 0, 1) ** 1.5 * mask
    image = mask * 0.34 + contrast * dense + 0.08 * pec
    # Fine parenchymal texture everywhere in the breast (hides simple intensity cues).
    image += 0.03 * (_smooth_noise(rng, shape, 3) - 0.5) * mask

    if lesion.kind != "none":
        lrng = np.random.default_rng(lesion.seed)  # the same lesion in every view of a breast
        cx = 0.15 * cols + lesion.depth * (geo["depth"] * 0.8 - 0.15 * cols)
        cy = geo["centre"] + lesion.height * geo["half_height"] * 0.6
        if view == "MLO":
            cy -= 0.08 * rows  # projected higher in the oblique view
        _draw_lesion(image, mask, lesion, cy, cx, lrng)
        if lesion.clip:
            cy2, cx2 = int(cy), int(cx + lesion.radius * rows * 0.5)
            s = max(2, rows // 128)
            image[cy2 - s: cy2 + s, cx2 - s: cx2 + s] = 1.0
    _draw_benign_marks(image, mask, rng)
    image = np.clip(image, 0, 1)
    if laterality == "R":
        image = image[:, ::-1]
    return np.ascontiguousarray(image, dtype=np.float32)


def to_stored_values(rng: np.random.Generator, image: np.ndarray, machine: Machine) -> np.ndarray:
    """Detector model: gain, offset, quantum noise, quantisation to ``bits`` bits, then the
    machine's storage conventions (MONOCHROME1 inversion, rescale intercept)."""
    top = 2**machine.bits - 1
    signal = machine.offset + machine.gain * image
    signal = signal + rng.normal(0, machine.noise, size=image.shape) * np.sqrt(0.2 + image)
    values = np.clip(np.round(signal * top), 0, top)
    if machine.photometric == "MONOCHROME1":
        values = top - values
    return np.clip(values - machine.intercept, 0, top).astype(np.uint16)
