"""Cached PNGs to model inputs: pad to the model's aspect ratio (square for most presets;
Mammo-CLIP's 1520 x 912 is portrait), resize, augment, normalise with the statistics the
model's backbone was pretrained with.

A job's images are loaded once into a uint8 tensor when they fit in ``images.memory_gib``
(the tiny presets are then never input-bound); above it they are read from the PNG cache
as they are indexed (``StreamedImages``), which gives the same pixels. Every random draw
takes a ``torch.Generator`` seeded per (seed, epoch, index): the batches do not depend on
the number of loader workers or on where the images come from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import (
    InterpolationMode,
    affine,
    elastic_transform,
    gaussian_blur,
)

from benchmark.errors import BenchmarkError


def image_hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """A preset's ``image_size``: one side (square) or [height, width]."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def load_fitted(png: Path, size: int | tuple[int, int]) -> np.ndarray:
    """Pad (centred) to the aspect ratio of ``size`` and resize with area interpolation to it."""
    try:
        image = Image.open(png)
        image.load()
    except FileNotFoundError:
        raise BenchmarkError(f"{png}: cached image not found (rerun the preprocess step)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BenchmarkError(f"{png}: cached image unreadable ({exc}); delete it and rerun the preprocess "
                             "step") from None
    if image.mode not in ("L", "I", "I;16"):
        raise BenchmarkError(f"{png}: cached image is {image.mode}, not a grey 8- or 16-bit PNG (the preprocess "
                             "step writes those)")
    array = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I"):
        array = array / 65535.0
    else:
        array = array / 255.0
    h, w = array.shape
    out_h, out_w = image_hw(size)
    scale = max(h / out_h, w / out_w)  # the canvas holds the whole image at the output's ratio
    canvas_h, canvas_w = max(h, round(out_h * scale)), max(w, round(out_w * scale))
    canvas = np.zeros((canvas_h, canvas_w), dtype=np.float32)
    top, left = (canvas_h - h) // 2, (canvas_w - w) // 2
    canvas[top: top + h, left: left + w] = array
    resized = Image.fromarray(canvas, mode="F").resize((out_w, out_h), Image.Resampling.BOX)
    return np.clip(np.round(np.asarray(resized) * 255), 0, 255).astype(np.uint8)


def load_images(cache_dir: Path, pngs: list[str], size: int | tuple[int, int]) -> torch.Tensor:
    """(N, 1, H, W) uint8 tensor (``image_hw(size)``)."""
    if not pngs:
        return torch.zeros((0, 1, *image_hw(size)), dtype=torch.uint8)
    return torch.from_numpy(np.stack([load_fitted(Path(cache_dir) / p, size) for p in pngs])).unsqueeze(1)


class StreamedImages:
    """Cached PNGs read when indexed, for image sets larger than memory. Indexes like the
    (N, 1, H, W) uint8 tensor of ``load_images``: an integer gives (1, H, W);
    a slice, an index array or a boolean mask gives (B, 1, H, W)."""

    def __init__(self, cache_dir: Path, pngs: list[str], size: int | tuple[int, int]):
        self.cache_dir, self.pngs, self.size = Path(cache_dir), list(pngs), size

    def __len__(self) -> int:
        return len(self.pngs)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)):
            return torch.from_numpy(load_fitted(self.cache_dir / self.pngs[key], self.size)).unsqueeze(0)
        positions = np.arange(len(self))[key.numpy() if isinstance(key, torch.Tensor) else key]
        if len(positions) == 0:
            return torch.zeros((0, 1, *image_hw(self.size)), dtype=torch.uint8)
        return torch.stack([self[int(i)] for i in positions])


def open_images(cache_dir: Path, pngs: list[str], size: int | tuple[int, int],
                memory_gib: float) -> torch.Tensor | StreamedImages:
    """The images in memory when N x H x W bytes fit in ``memory_gib``, else streamed."""
    height, width = image_hw(size)
    if len(pngs) * height * width <= memory_gib * 2**30:
        return load_images(cache_dir, pngs, size)
    return StreamedImages(cache_dir, pngs, size)


def select_images(images: torch.Tensor | StreamedImages, positions: list[int]) -> torch.Tensor | StreamedImages:
    """The images at ``positions``, as ``images`` holds them: a tensor copy of those rows, or
    the streamed images of those files (nothing read)."""
    if isinstance(images, StreamedImages):
        return StreamedImages(images.cache_dir, [images.pngs[i] for i in positions], images.size)
    return images[torch.as_tensor(positions, dtype=torch.long)]


HALF = (0.5, 0.5, 0.5)


def normalise_float(x01: torch.Tensor, mean: tuple = HALF, std: tuple = HALF) -> torch.Tensor:
    """float (N, 1, H, W) in [0, 1] to (N, 3, H, W), each channel (x - mean) / std: the
    statistics the model's backbone was pretrained with (``model.image_mean``, ``image_std``)."""
    mean_13 = torch.tensor(mean, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std_13 = torch.tensor(std, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return ((x01.expand(-1, 3, -1, -1) - mean_13) / std_13).contiguous()


def normalise(images_u8: torch.Tensor, mean: tuple = HALF, std: tuple = HALF) -> torch.Tensor:
    """uint8 (N, 1, H, W) to float (N, 3, H, W), normalised as ``normalise_float``."""
    return normalise_float(images_u8.float().div_(255.0), mean, std)


def model_normalise(model, images: torch.Tensor) -> torch.Tensor:
    """``normalise`` (uint8) or ``normalise_float`` (float in [0, 1]) with ``model``'s statistics."""
    stats = (getattr(model, "image_mean", HALF), getattr(model, "image_std", HALF))
    return normalise(images, *stats) if images.dtype == torch.uint8 else normalise_float(images, *stats)


@dataclass(frozen=True)
class Augment:
    """Pretraining augmentations; each method names its own in its preset, after its
    official training transform (the list per method is in docs/protocol.md). Images are
    grey, so colour jitter is brightness and contrast only (saturation and hue, and a
    random greyscale, leave a grey image unchanged)."""

    crop: bool = True  # a random resized crop (False: the whole image, as Mammo-CLIP's transform)
    crop_scale: tuple[float, float] = (0.5, 1.0)  # random resized crop: share of the area
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # and aspect ratio (torchvision's defaults)
    hflip: bool = True  # horizontal flip with probability 0.5
    vflip: bool = True  # vertical flip with probability 0.5
    jitter: float = 0.2  # brightness and contrast factors drawn from [1 - jitter, 1 + jitter]
    jitter_p: float = 0.8  # probability of the colour jitter
    blur_p: float = 0.0  # probability of a Gaussian blur
    blur_kernel: int = 7  # its kernel size in pixels
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # its sigma, drawn uniformly
    # albumentations' Affine and ElasticTransform, as Mammo-CLIP trains with them (off by default)
    affine_p: float = 0.0  # probability of a random affine map about the centre (zero fill)
    affine_degrees: float = 0.0  # rotation drawn from [-d, d]
    affine_translate: float = 0.0  # shift per axis drawn from [-t, t] times that side
    affine_scale: tuple[float, float] = (1.0, 1.0)  # zoom drawn uniformly
    affine_shear: float = 0.0  # shear per axis drawn from [-s, s] degrees
    elastic_p: float = 0.0  # probability of an elastic deformation
    elastic_alpha: float = 0.0  # its displacement, pixels per unit of the smoothed noise
    elastic_sigma: float = 1.0  # its Gaussian smoothing of the uniform noise, pixels

    def crop_box(self, h: int, w: int, gen: torch.Generator) -> tuple[int, int, int, int]:
        """torchvision's ``RandomResizedCrop.get_params``: ten tries at a box of the drawn
        area and ratio, else the central box of the clamped ratio."""
        area = h * w
        log_ratio = (np.log(self.crop_ratio[0]), np.log(self.crop_ratio[1]))
        for _ in range(10):
            u = torch.rand(4, generator=gen).tolist()
            target = area * (self.crop_scale[0] + u[0] * (self.crop_scale[1] - self.crop_scale[0]))
            ratio = float(np.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0])))
            cw, ch = round(np.sqrt(target * ratio)), round(np.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                return int(u[2] * (h - ch + 1)), int(u[3] * (w - cw + 1)), ch, cw
        ratio = w / h
        if ratio < self.crop_ratio[0]:
            cw, ch = w, round(w / self.crop_ratio[0])
        elif ratio > self.crop_ratio[1]:
            ch, cw = h, round(h * self.crop_ratio[1])
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __call__(self, image_u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(1, H, W) uint8 to (1, H, W) float in [0, 1]."""
        x = image_u8.float() / 255.0
        _, h, w = x.shape
        if self.crop:
            top, left, ch, cw = self.crop_box(h, w, gen)
            x = x[:, top: top + ch, left: left + cw]
            x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        u = torch.rand(5, generator=gen).tolist()
        if self.hflip and u[0] < 0.5:
            x = x.flip(-1)
        if self.vflip and u[1] < 0.5:
            x = x.flip(-2)
        if self.jitter > 0 and u[2] < self.jitter_p:
            factors = (1 - self.jitter + 2 * self.jitter * torch.rand(2, generator=gen)).tolist()
            for op in torch.randperm(2, generator=gen).tolist():  # torchvision applies them in random order
                if op == 0:
                    x = (x * factors[0]).clamp(0, 1)  # brightness
                else:
                    x = (factors[1] * x + (1 - factors[1]) * x.mean()).clamp(0, 1)  # contrast
        if self.blur_p > 0 and u[3] < self.blur_p:
            sigma = self.blur_sigma[0] + u[4] * (self.blur_sigma[1] - self.blur_sigma[0])
            x = gaussian_blur(x, [self.blur_kernel, self.blur_kernel], [sigma, sigma])
        if self.affine_p > 0 and torch.rand(1, generator=gen).item() < self.affine_p:
            x = self.random_affine(x, gen)
        if self.elastic_p > 0 and torch.rand(1, generator=gen).item() < self.elastic_p:
            x = self.random_elastic(x, gen)
        return x.clamp(0, 1)

    def random_affine(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Rotation, shift, zoom and shear drawn from the ranges above, bilinear, zero fill."""
        _, h, w = x.shape
        u = torch.rand(6, generator=gen).tolist()
        span = lambda r, v: -r + 2 * r * v  # noqa: E731 -- uniform on [-r, r]
        scale = self.affine_scale[0] + u[3] * (self.affine_scale[1] - self.affine_scale[0])
        return affine(x, angle=span(self.affine_degrees, u[0]),
                      translate=[round(span(self.affine_translate, u[1]) * w), round(span(self.affine_translate, u[2]) * h)],
                      scale=scale, shear=[span(self.affine_shear, u[4]), span(self.affine_shear, u[5])],
                      interpolation=InterpolationMode.BILINEAR, fill=0.0)

    def random_elastic(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Simard et al.'s elastic deformation (albumentations' ElasticTransform): uniform noise
        in [-1, 1] per pixel and axis, smoothed by a Gaussian of ``elastic_sigma`` pixels (kernel
        of 3 sigma each side, at most the image), times ``elastic_alpha`` pixels."""
        _, h, w = x.shape
        noise = torch.rand((2, 1, h, w), generator=gen) * 2 - 1
        kernel = min(2 * math.ceil(3 * self.elastic_sigma) + 1, (min(h, w) - 1) // 2 * 2 + 1)
        field = gaussian_blur(noise, [kernel, kernel], [self.elastic_sigma] * 2) * self.elastic_alpha
        # pixels to the normalised [-1, 1] grid: (dx, dy) as elastic_transform wants them
        displacement = torch.stack([field[0, 0] * 2 / w, field[1, 0] * 2 / h], dim=-1)[None]
        return elastic_transform(x, displacement, interpolation=InterpolationMode.BILINEAR, fill=[0.0])
