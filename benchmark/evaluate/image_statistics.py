"""The hand-crafted baseline: global intensity statistics of each image as its "features".

What a method must beat to have learned more than histograms: the linear probe fitted on
these statistics (the table's ``image_statistics`` rows) reads brightness and the share of
dense tissue, and nothing local. The statistics are taken on the cached image at the size
the tiny models see (``image_statistics.size``), over the whole image (background included,
as a model sees it): mean, standard deviation, the 5th, 25th, 50th, 75th and 95th
percentiles, and the shares of pixels above a quarter and above half of full scale (the
breast's area and its dense part), each standardized over the training images. The features file has the features step's format, so
the linear probe runs on it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STATISTICS = ["mean", "std", "p05", "p25", "p50", "p75", "p95", "above_quarter", "above_half"]


def intensity_statistics(images_nhw: np.ndarray) -> np.ndarray:
    """(N, 9) float32: ``STATISTICS`` of each uint8 image, on a 0-1 scale."""
    x_np = images_nhw.reshape(len(images_nhw), -1).astype(np.float32) / 255
    percentiles = np.percentile(x_np, [5, 25, 50, 75, 95], axis=1).T
    return np.column_stack([x_np.mean(1), x_np.std(1), percentiles, (x_np > 0.25).mean(1),
                            (x_np > 0.5).mean(1)]).astype(np.float32)


def standardized(features_nf: np.ndarray, train_n: np.ndarray) -> np.ndarray:
    """Each statistic centred and scaled by its mean and sd over the training images only (no
    validation or test image informs it), so the probe's C grid, made for unit-scale model
    features, suits these too (raw shares and percentiles span 0.01 to 0.1)."""
    mean, sd = features_nf[train_n].mean(0), features_nf[train_n].std(0)
    return ((features_nf - mean) / np.where(sd > 0, sd, 1)).astype(np.float32)


def run_image_statistics(manifest: Path, split: Path, out: Path, size: int) -> None:
    """The ``image-statistics`` command: the statistics of every train, validation and test image."""
    from benchmark.data.images import load_images
    from benchmark.data.split import read_split, split_records
    from benchmark.data.tables import read_manifest

    records = split_records(read_manifest(manifest), read_split(split), ("train", "val", "test"))
    images = load_images(Path(manifest).parent, records["png"].tolist(), size)[:, 0].numpy()
    features = standardized(intensity_statistics(images), (records["split"] == "train").to_numpy())
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, image_id=records["image_id"].to_numpy(str), features=features,
             embeddings=np.zeros((len(records), 0), np.float32), statistics=np.array(STATISTICS))
    print(f"image-statistics: {len(records)} images x {len(STATISTICS)} statistics at {size} px -> {out}")
