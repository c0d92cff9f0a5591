"""GLAM's MLO-to-CC alignment (benchmark/data/mlo_alignment.py) on synthetic MLO views whose
pectoral muscle's angle is known: the angle is recovered, the muscle is turned out of the
image, a right breast gives the mirror image of the left one's result, text labels go,
and an image without a muscle gets the official fallback rotation."""

import math

import numpy as np
import pytest

from benchmark.data.mlo_alignment import FALLBACK_ANGLE, align_mlo_to_cc

MUSCLE = 220


def synthetic_mlo(h: int, w: int, angle: float | None, label: bool = True) -> np.ndarray:
    """A left breast (a half ellipse on the chest wall, darker towards the skin line), the
    pectoral muscle as a brighter triangle in its upper chest-wall corner whose edge is
    ``angle`` degrees from vertical (None: no muscle), and a text label at the top right."""
    yy, xx = np.mgrid[0:h, 0:w]
    radius = (xx / (0.8 * w)) ** 2 + ((yy - h / 2) / (0.48 * h)) ** 2
    image = np.where(radius < 1, 150 - 60 * radius, 0)
    if angle is not None:
        y0 = 0.4 * h
        x0 = y0 * math.tan(math.radians(angle))
        image = np.where((xx / x0 + yy / y0 < 1) & (radius < 1), MUSCLE, image)
    if label:
        image[10:18, w - 30:w - 8] = 255
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(128, 104), (256, 208), (512, 416)])
@pytest.mark.parametrize("angle", [15, 25, 35, 45])
def test_the_muscle_angle_is_recovered_and_the_rotation_turns_the_muscle_out_of_the_image(shape, angle):
    """The rotation about the line's end on the chest wall stands the muscle's edge on the
    chest wall and turns the triangle beyond it, out of the image (the official figure's
    "pectoral muscle removed"); a rotation the other way would keep it all."""
    image = synthetic_mlo(*shape, angle)
    result = align_mlo_to_cc(image)
    assert result.found_line and result.angle == pytest.approx(angle, abs=1.01)  # Hough's 1-degree bins
    assert result.image.max() <= MUSCLE  # the label (255) was removed before rotating
    assert _muscle_pixels(result.image) < 0.1 * _muscle_pixels(image)  # only the interpolated edge is left


def _muscle_pixels(image: np.ndarray) -> int:
    return int(((image >= MUSCLE - 10) & (image <= MUSCLE)).sum())


def test_a_right_breast_gives_the_mirror_of_the_left_breasts_result():
    left = synthetic_mlo(256, 208, 25)
    a, b = align_mlo_to_cc(left), align_mlo_to_cc(left[:, ::-1].copy())
    assert a.angle == b.angle and np.array_equal(a.image, b.image[:, ::-1])


def test_without_a_muscle_line_the_official_fallback_rotation_applies():
    result = align_mlo_to_cc(synthetic_mlo(256, 208, None))
    assert not result.found_line and result.angle == FALLBACK_ANGLE
    assert result.image.dtype == np.uint8 and result.image.max() > 0


def test_the_align_step_writes_one_aligned_png_per_mlo_image_at_the_cache_bit_depth(tmp_path):
    import pandas as pd
    from PIL import Image

    from benchmark.data.mlo_alignment import align_cached_mlo_views

    eight = synthetic_mlo(256, 208, 25)
    sixteen = (synthetic_mlo(256, 208, 35).astype(np.uint16) * 257)  # a 16-bit cache
    (tmp_path / "images").mkdir()
    Image.fromarray(eight).save(tmp_path / "images/a.png")
    Image.fromarray(sixteen).save(tmp_path / "images/b.png")
    Image.fromarray(eight[:, ::-1].copy()).save(tmp_path / "images/c.png")
    manifest = pd.DataFrame({"image_id": ["a", "b", "c"], "view": ["MLO", "MLO", "CC"],
                             "png": ["images/a.png", "images/b.png", "images/c.png"]})
    table = align_cached_mlo_views(manifest, tmp_path, tmp_path / "mlo_to_cc.csv")
    assert list(table.image_id) == ["a", "b"] and pd.read_csv(tmp_path / "mlo_to_cc.csv").equals(table)
    assert list(table.angle) == pytest.approx([25, 35], abs=1.01) and table.found_line.all()
    for png, dtype in zip(table.png, (np.uint8, np.uint16)):
        pixels = np.asarray(Image.open(tmp_path / png))
        assert png.startswith("mlo_to_cc/images/") and pixels.astype(np.uint16).max() > 0
        assert (pixels.max() > 255) == (dtype == np.uint16)  # 16 bits stay 16 bits
