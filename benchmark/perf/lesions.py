"""Does the synthetic world's local evidence survive the tiny models' input? For each lesion
radius range, in one run: how well global intensity statistics separate cancer-looking from
benign-looking breasts (should stay near 0.5), and how fast an untrained ResNet-10 learns
to separate them from the pixels (should rise well above 0.5 within a few hundred steps).

    python -m benchmark.perf.lesions [--radius 0.055,0.075 0.11,0.15] [--images 900]

Images: ``render_breast`` CC views at 512 x 416, half with a BI-RADS 4 or 5 lesion (the
synthetic cancers' look), half with a BI-RADS 2 or 3 lesion (benign, same size and
brightness budget), any density; each scaled to its brightest pixel and area-resized to a
96 px square as the cache and the models' loader do. Statistics: the image-statistics
baseline's nine features, 5-fold logistic regression, AUC. Pixels: the tiny presets'
ResNet-10 from random weights with a linear head, AdamW 1e-3, batch 16, horizontal flips,
trained on two thirds and tested on the last third, AUC after each step count. The
default fine-tune is 40 steps (config/config.yaml); docs/synthetic-data.md has the
figures that chose ``synth.LESION_RADIUS``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from torch import nn

from benchmark.data import synth
from benchmark.data.render import render_breast
from benchmark.evaluate.image_statistics import intensity_statistics
from models.encoders import image_backbone

STEPS = (40, 160, 320, 640)


def render_set(radius: tuple[float, float], n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 96, 96) uint8 images and (N,) labels: 1 for a BI-RADS 4/5 lesion, 0 for 2/3."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    default = synth.LESION_RADIUS
    synth.LESION_RADIUS = radius  # lesion_for_birads draws from it
    try:
        for i in range(n_images):
            cancer = i % 2
            birads = int(rng.choice([4, 5] if cancer else [2, 3]))
            lesion, _ = synth.lesion_for_birads(rng, birads, seed=i)
            image = render_breast(rng, (512, 416), "CC", "L", int(rng.integers(1, 5)), lesion)
            canvas = np.zeros((512, 512), np.float32)
            canvas[:, 48:464] = image / image.max()
            small = Image.fromarray(canvas, mode="F").resize((96, 96), Image.Resampling.BOX)
            images.append(np.clip(np.round(np.asarray(small) * 255), 0, 255).astype(np.uint8))
            labels.append(cancer)
    finally:
        synth.LESION_RADIUS = default
    return np.stack(images), np.array(labels)


def statistics_auc(images: np.ndarray, labels: np.ndarray) -> float:
    features = intensity_statistics(images)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    scores = cross_val_predict(LogisticRegression(max_iter=2000), features, labels, cv=5,
                               method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def pixel_aucs(images: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Test AUC of a ResNet-10 trained from scratch, after each of ``STEPS``."""
    torch.manual_seed(0)
    x = (torch.tensor(images, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1) / 255 - 0.5) / 0.5
    y = torch.tensor(labels, dtype=torch.float32)
    n_train = len(x) * 2 // 3
    net = nn.Sequential(image_backbone("resnet_tiny", 96), nn.Linear(256, 1))
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    aucs = {}
    for step in range(1, max(STEPS) + 1):
        net.train()
        batch = torch.randint(0, n_train, (16,), generator=gen)
        xb = x[batch].flip(-1) if torch.rand(1, generator=gen) < 0.5 else x[batch]
        loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step in STEPS:
            net.eval()
            with torch.no_grad():
                aucs[step] = float(roc_auc_score(labels[n_train:], net(x[n_train:])[:, 0].numpy()))
    return aucs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--radius", nargs="+", default=["0.055,0.075", f"{synth.LESION_RADIUS[0]},"
                                                                      f"{synth.LESION_RADIUS[1]}"])
    parser.add_argument("--images", type=int, default=900)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| radius (share of height) | px at 96 | statistics AUC | " +
          " | ".join(f"ResNet-10 AUC @{s}" for s in STEPS) + " | seconds |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in STEPS) + " | ---: |")
    for text in args.radius:
        radius = tuple(float(v) for v in text.split(","))
        start = time.perf_counter()
        images, labels = render_set(radius, args.images)
        stats, pixels = statistics_auc(images, labels), pixel_aucs(images, labels)
        print(f"| {radius[0]:g} to {radius[1]:g} | {radius[0] * 96:.0f} to {radius[1] * 96:.0f} | {stats:.3f} | "
              + " | ".join(f"{pixels[s]:.3f}" for s in STEPS) + f" | {time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
