"""Running a checkpoint's image encoder over a set of cached images, in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmark.data.images import load_images, model_normalise
from benchmark.evaluate.device import model_device


@torch.no_grad()
def encode_images(model, cache_dir: Path, pngs: list[str], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features (for probes) and joint-space embeddings (for zero-shot) of every
    image, from one pass of the backbone: embedding = normalise(project_image(feature))."""
    features, embeddings = [], []
    device = model_device(model)
    for start in tqdm(range(0, len(pngs), batch_size), desc="encode", unit="batch"):
        images = model_normalise(model, load_images(cache_dir, pngs[start: start + batch_size], model.image_size)).to(device)
        feats = model.image_features(images)
        features.append(feats.float().cpu().numpy())
        embeddings.append(F.normalize(model.project_image(feats), dim=-1).float().cpu().numpy())
    if not features:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(features), np.concatenate(embeddings)
