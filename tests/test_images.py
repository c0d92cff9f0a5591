"""Cached PNGs read in memory or streamed from disk give the same pixels."""

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data.images import StreamedImages, load_images, open_images


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
