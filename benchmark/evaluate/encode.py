"""Running a checkpoint's image encoder over a set of cached images, in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from benchmark.data.images import load_images, normalise


def split_records(manifest: pd.DataFrame, split: pd.DataFrame, splits: tuple[str, ...]) -> pd.DataFrame:
    """Manifest rows of the given splits, with a ``split`` column, in manifest order."""
    table = manifest.merge(split[["patient_id", "split"]], on="patient_id", how="inner", validate="many_to_one")
    return table[table["split"].isin(splits)].reset_index(drop=True)


@torch.no_grad()
def encode_images(model, cache_dir: Path, pngs: list[str], fn: str, batch_size: int = 64,
                  desc: str = "encode") -> np.ndarray:
    """Apply ``model.<fn>`` (encode_image or image_features) to every image."""
    out = []
    for start in tqdm(range(0, len(pngs), batch_size), desc=desc, unit="batch"):
        images = normalise(load_images(cache_dir, pngs[start: start + batch_size], model.image_size))
        out.append(getattr(model, fn)(images).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
