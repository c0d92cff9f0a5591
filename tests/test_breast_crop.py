"""The breast crop on images with film and screening artefacts: the crop holds the whole
breast and little else, and the breast's own intensities set the scale."""

import numpy as np
import pytest
from PIL import Image

from benchmark.data.dicom_io import stable_uid, write_mammogram
from benchmark.data.preprocess import PreprocessSettings, breast_region, preprocess
from tests.test_preprocess import _records

ROWS, COLS = 600, 480
TOP = 4095


def _breast(seed=0):
    """A textured half-ellipse breast on the left edge (chest wall), a noisy dark background,
    and its true mask."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ROWS, 0:COLS].astype(np.float32)
    r = np.sqrt((x / 300.0) ** 2 + ((y - 300) / 210.0) ** 2)
    breast = r < 1
    texture = 600 * np.clip(1 - r, 0, 1) ** 0.5 + 250 * rng.random((ROWS, COLS))
    image = 250 + rng.normal(0, 30, (ROWS, COLS)) + breast * (1200 + texture)
    return image, breast


def _bright_border(image, sides, width=18, value=TOP):
    out = image.copy()
    if "top" in sides:
        out[:width] = value
    if "bottom" in sides:
        out[-width:] = value
    if "left" in sides:
        out[:, :width] = value
    if "right" in sides:
        out[:, -width:] = value
    return out


def _text_block(image, corner, value=TOP):
    """A burned-in view label: bright strokes of letters in a corner."""
    out = image.copy()
    r0 = 20 if corner[0] == "top" else ROWS - 70
    c0 = COLS - 130 if corner[1] == "right" else 20
    for k in range(4):  # four 'letters' of vertical and horizontal strokes
        out[r0:r0 + 50, c0 + 28 * k:c0 + 28 * k + 6] = value
        out[r0:r0 + 6, c0 + 28 * k:c0 + 28 * k + 22] = value
        out[r0 + 44:r0 + 50, c0 + 28 * k:c0 + 28 * k + 22] = value
    return out


def _marker(image, breast, value=TOP):
    """A lead marker (a bright disc) touching the skin line at the nipple side."""
    out = image.copy()
    y, x = np.mgrid[0:ROWS, 0:COLS]
    tip = int(np.nonzero(breast[300])[0].max())
    out[((x - (tip + 12)) ** 2 + (y - 300) ** 2) <= 12 ** 2] = value
    return out


def _film_edge(image, value=3300):
    """A scanner's bright film edge, not saturated and noisy, on the top and right."""
    rng = np.random.default_rng(5)
    out = image.copy()
    out[:10] = value + rng.normal(0, 40, (10, COLS))
    out[:, -8:] = value + rng.normal(0, 40, (ROWS, 8))
    return out


def _all_artefacts(image, breast):
    return _marker(_text_block(_text_block(_bright_border(image, ["bottom", "right"]), ("top", "right")),
                               ("bottom", "right")), breast)


CASES = {
    "clean": lambda im, b: im,
    "border top": lambda im, b: _bright_border(im, ["top"]),
    "border on four sides": lambda im, b: _bright_border(im, ["top", "bottom", "left", "right"]),
    "text block top right": lambda im, b: _text_block(im, ("top", "right")),
    "text blocks in the chest-wall corners": lambda im, b: _text_block(_text_block(im, ("top", "left")),
                                                                         ("bottom", "left")),
    "marker touching the skin line": _marker,
    "unsaturated marker touching the skin line": lambda im, b: _marker(im, b, value=3000),
    "unsaturated film edge": lambda im, b: _film_edge(im),
    "film: border, labels and marker": _all_artefacts,
}


def _box_of(mask):
    rows, cols = np.nonzero(mask)
    return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("monochrome1", [False, True])
def test_crop_holds_the_whole_breast_and_little_else(case, monochrome1):
    image, breast = _breast()
    marked = CASES[case](image, breast)
    breast = breast & (marked == image)  # the visible breast: a border on the chest-wall side covers some
    stored = np.clip(marked, 0, TOP).astype(np.uint16)
    if monochrome1:
        stored = (TOP - stored).astype(np.uint16)
    (rows, cols), _ = breast_region(stored, bright_is_dense=not monochrome1)
    r0, r1, c0, c1 = _box_of(breast)
    assert rows.start <= r0 and rows.stop >= r1 and cols.start <= c0 and cols.stop >= c1, (rows, cols)
    true_area = (r1 - r0) * (c1 - c0)
    crop_area = (rows.stop - rows.start) * (cols.stop - cols.start)
    # little else: at most 5 % more than the breast's own box (the old threshold crop kept
    # the whole image as soon as a border or a label was bright)
    assert crop_area <= 1.05 * true_area, f"{case}: crop {crop_area} vs breast box {true_area}"
    assert breast[rows, cols].mean() >= 0.74  # a half ellipse fills pi/4 of its box; pi/4 / 1.05 = 0.748


def test_breast_intensities_set_the_scale(tmp_path):
    """A marker left in the crop (it touches the skin line) clips to white; the breast's own
    brightest tissue, not the marker, maps to white."""
    image, breast = _breast(1)
    clean = np.clip(image, 0, TOP).astype(np.uint16)
    marked = np.clip(_marker(image, breast), 0, TOP).astype(np.uint16)
    for name, stored in [("clean", clean), ("marked", marked)]:
        write_mammogram(tmp_path / f"{name}.dcm", stored, bits_stored=12, patient_id="1",
                        study_uid=stable_uid("s"), series_uid=stable_uid("se"), sop_uid=stable_uid(name),
                        laterality="L", view="CC")
    preprocess(_records([("clean", "clean.dcm"), ("marked", "marked.dcm")]), tmp_path, tmp_path / "cache",
               PreprocessSettings(long_side=256))
    a = np.asarray(Image.open(tmp_path / "cache/images/clean.png"), np.float32)
    b = np.asarray(Image.open(tmp_path / "cache/images/marked.png"), np.float32)
    assert a.shape == b.shape  # the marker did not widen the crop
    # Inside the breast the two images agree (the old min-max let the marker darken the breast).
    inner = a > 0.5 * a.max()
    assert np.abs(a[inner] - b[inner]).mean() < 1.0
    assert a[inner].max() == 255


def test_flat_phantom_is_its_own_breast():
    """A flat bright object (a phantom at the top of the range) is kept, not set aside as a label."""
    stored = np.zeros((200, 300), np.uint16)
    stored[50:150, 0:100] = 2000
    (rows, cols), mask = breast_region(stored, True)
    assert rows.start <= 50 and rows.stop >= 150 and cols.start == 0 and 100 <= cols.stop <= 112
    assert mask.mean() > 0.8
