"""Cached PNGs read in memory or streamed from disk give the same pixels."""

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data.images import StreamedImages, load_images, open_images, select_images


@pytest.fixture()
def pngs(tmp_path):
    """Six PNGs of different shapes and bit depths, as the preprocess step writes them."""
    rng = np.random.default_rng(0)
    names = []
    for i, (h, w) in enumerate([(40, 30), (30, 40), (33, 33), (50, 21), (21, 50), (64, 48)]):
        if i % 2:
            Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(tmp_path / f"{i}.png")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        names.append(f"{i}.png")
    return tmp_path, names


def test_streamed_images_index_like_the_in_memory_tensor(pngs):
    root, names = pngs
    memory, streamed = load_images(root, names, 24), StreamedImages(root, names, 24)
    assert len(streamed) == len(memory) == 6
    assert torch.equal(streamed[3], memory[3]) and streamed[np.int64(2)].shape == (1, 24, 24)
    assert torch.equal(streamed[1:4], memory[1:4])
    assert torch.equal(streamed[np.array([5, 0, 5])], memory[np.array([5, 0, 5])])
    mask = torch.tensor([True, False, True, False, False, True])
    assert torch.equal(streamed[mask], memory[mask])
    assert streamed[4:4].shape == (0, 1, 24, 24) and streamed[4:4].dtype == torch.uint8


def test_open_images_streams_above_the_memory_limit(pngs):
    root, names = pngs
    assert isinstance(open_images(root, names, 24, memory_gib=6 * 24 * 24 / 2**30), torch.Tensor)
    assert isinstance(open_images(root, names, 24, memory_gib=(6 * 24 * 24 - 1) / 2**30), StreamedImages)


def test_selected_images_are_those_rows_in_memory_and_those_files_when_streamed(pngs):
    """The fine-tune reads a job's images once and hands each cell its subsets."""
    root, names = pngs
    memory, streamed = load_images(root, names, 24), StreamedImages(root, names, 24)
    positions = [4, 1, 1, 5]
    in_memory, from_disk = select_images(memory, positions), select_images(streamed, positions)
    assert torch.equal(in_memory, load_images(root, [names[i] for i in positions], 24))
    assert isinstance(from_disk, StreamedImages) and from_disk.pngs == [names[i] for i in positions]
    assert torch.equal(from_disk[np.arange(4)], in_memory)
    assert select_images(memory, []).shape == (0, 1, 24, 24)


def test_portrait_size_pads_to_its_aspect_and_keeps_the_image_whole(tmp_path):
    """[height, width] sizes (Mammo-CLIP's 1520 x 912): the image is centred on a canvas of
    the output's aspect, never cropped; a square size gives what it always gave."""
    Image.fromarray(np.full((50, 50), 255, np.uint8)).save(tmp_path / "square.png")
    Image.fromarray(np.full((60, 36), 255, np.uint8)).save(tmp_path / "portrait.png")
    square = load_images(tmp_path, ["square.png"], [40, 24])[0, 0]
    assert square.shape == (40, 24)
    assert square[0].max() == 0 and square[-1].max() == 0 and square[20].min() == 255  # padded above and below
    assert (load_images(tmp_path, ["portrait.png"], [40, 24]) == 255).all()  # already at the aspect: no padding
    assert StreamedImages(tmp_path, ["square.png"], [40, 24])[0:1].shape == (1, 1, 40, 24)
    assert torch.equal(load_images(tmp_path, ["portrait.png"], 30), load_images(tmp_path, ["portrait.png"], [30, 30]))


def test_affine_and_elastic_augmentations_move_pixels_and_are_off_by_default():
    from benchmark.data.images import Augment

    image = torch.zeros((1, 40, 24), dtype=torch.uint8)
    image[:, 15:25, 8:16] = 255
    still = dict(crop=False, hflip=False, vflip=False, jitter=0)
    draw = lambda augment, seed=0: augment(image, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(Augment(**still)), image.float() / 255)
    zoom_out = draw(Augment(**still, affine_p=1.0, affine_scale=(0.5, 0.5)))
    assert float(zoom_out.sum()) == pytest.approx(80 / 4, rel=0.15)  # a quarter of the area
    assert float(zoom_out[0, 20, 12]) == pytest.approx(1.0)  # about the centre
    warped = draw(Augment(**still, elastic_p=1.0, elastic_alpha=3.0, elastic_sigma=2.0))
    assert not torch.equal(warped, image.float() / 255) and float(warped.sum()) == pytest.approx(80.0, rel=0.3)
    assert torch.allclose(draw(Augment(**still, elastic_p=1.0, elastic_alpha=0.0)), image.float() / 255, atol=1e-5)
