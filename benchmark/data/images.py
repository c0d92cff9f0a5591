"""Cached PNGs to model inputs: pad to square, resize, augment, normalise (mean = std = 0.5).

A job's images are loaded once into a uint8 tensor when they fit in ``images.memory_gib``
(the tiny presets are then never input-bound); above it they are read from the PNG cache
as they are indexed (``StreamedImages``), which gives the same pixels. Every random draw
takes a ``torch.Generator`` seeded per (seed, epoch, index): the batches do not depend on
the number of loader workers or on where the images come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def load_square(png: Path, size: int) -> np.ndarray:
    """Pad to a square (centred) and resize with area interpolation to ``size``."""
    image = Image.open(png)
    array = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I"):
        array = array / 65535.0
    else:
        array = array / 255.0
    h, w = array.shape
    side = max(h, w)
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top: top + h, left: left + w] = array
    resized = Image.fromarray(canvas, mode="F").resize((size, size), Image.Resampling.BOX)
    return np.clip(np.round(np.asarray(resized) * 255), 0, 255).astype(np.uint8)


def load_images(cache_dir: Path, pngs: list[str], size: int) -> torch.Tensor:
    """(N, 1, size, size) uint8 tensor."""
    stack = np.stack([load_square(Path(cache_dir) / p, size) for p in pngs]) if pngs else np.zeros((0, size, size), np.uint8)
    return torch.from_numpy(stack).unsqueeze(1)


class StreamedImages:
    """Cached PNGs read when indexed, for image sets larger than memory. Indexes like the
    (N, 1, size, size) uint8 tensor of ``load_images``: an integer gives (1, size, size);
    a slice, an index array or a boolean mask gives (B, 1, size, size)."""

    def __init__(self, cache_dir: Path, pngs: list[str], size: int):
        self.cache_dir, self.pngs, self.size = Path(cache_dir), list(pngs), size

    def __len__(self) -> int:
        return len(self.pngs)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return torch.from_numpy(load_square(self.cache_dir / self.pngs[key], self.size)).unsqueeze(0)
        positions = np.arange(len(self))[key.numpy() if isinstance(key, torch.Tensor) else key]
        if len(positions) == 0:
            return torch.zeros((0, 1, self.size, self.size), dtype=torch.uint8)
        return torch.stack([self[int(i)] for i in positions])


def open_images(cache_dir: Path, pngs: list[str], size: int, memory_gib: float) -> torch.Tensor | StreamedImages:
    """The images in memory when N x size x size bytes fit in ``memory_gib``, else streamed."""
    if len(pngs) * size * size <= memory_gib * 2**30:
        return load_images(cache_dir, pngs, size)
    return StreamedImages(cache_dir, pngs, size)


def normalise(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) to float (N, 3, H, W) with mean = std = 0.5."""
    x = images_u8.float().div_(255.0)
    return ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()


@dataclass(frozen=True)
class Augment:
    """Pretraining augmentations; each method names its own in its preset."""

    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: bool = True
    vflip: bool = True
    jitter: float = 0.2  # brightness / contrast strength
    jitter_p: float = 0.8

    def __call__(self, image_u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(1, H, W) uint8 to (1, H, W) float in [0, 1]."""
        x = image_u8.float() / 255.0
        _, h, w = x.shape
        u = torch.rand(8, generator=gen).tolist()
        scale = self.crop_scale[0] + u[0] * (self.crop_scale[1] - self.crop_scale[0])
        ratio = float(np.exp(np.log(3 / 4) + u[1] * (np.log(4 / 3) - np.log(3 / 4))))
        ch = min(h, max(1, round(np.sqrt(scale * h * w / ratio))))
        cw = min(w, max(1, round(np.sqrt(scale * h * w * ratio))))
        top, left = int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1))
        x = x[:, top: top + ch, left: left + cw]
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        if self.hflip and u[4] < 0.5:
            x = x.flip(-1)
        if self.vflip and u[5] < 0.5:
            x = x.flip(-2)
        if self.jitter > 0 and u[6] < self.jitter_p:
            b, c = (torch.rand(2, generator=gen) * 2 - 1) * self.jitter
            mean = x.mean()
            x = ((x - mean) * (1 + c) + mean) * (1 + b)
        return x.clamp(0, 1)


def normalise_float(x01: torch.Tensor) -> torch.Tensor:
    """float (N, 1, H, W) in [0, 1] to (N, 3, H, W), mean = std = 0.5."""
    return ((x01 - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
