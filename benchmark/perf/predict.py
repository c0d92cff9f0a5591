"""Fine-tune predictions of each tiny preset: the encoder under bf16 autocast (today) against
fp32 (the code before), measured in the same run.

    python -m benchmark.perf.predict [--images 312] [--threads 1]

A default-run fine-tune job scores about 3,400 images (validation every ``eval_every``
steps and the test split, for each of its seven cells), a quarter of its time in fp32.
For each model it prints images/s in both precisions, their ratio and the largest
difference between the two precisions' class probabilities.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.data.images import image_hw
from benchmark.evaluate.finetune import Classifier, predict
from benchmark.perf.precision import MODELS
from benchmark.perf.train import synthetic_tokenizer
from benchmark.registry import build_model


def images_per_second(classifier: Classifier, images: torch.Tensor, precision: str) -> tuple[float, np.ndarray]:
    predict(classifier, images[:64], precision=precision)  # warm-up
    start = time.perf_counter()
    scores = predict(classifier, images, precision=precision)
    return len(images) / (time.perf_counter() - start), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=312, help="images scored per model (the EMBED test split)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = synthetic_tokenizer(Path(tmp) / "tokenizer.json")
        print(f"{'model':9s} {'fp32 img/s':>10s} {'bf16 img/s':>10s} {'x fp32':>7s} {'max |diff|':>10s}")
        for name in args.models:
            torch.manual_seed(0)
            classifier = Classifier(build_model(name, "tiny", tokenizer=tokenizer), 4)
            images = torch.randint(0, 256, (args.images, 1, *image_hw(classifier.model.image_size)), dtype=torch.uint8)
            fp32, fp32_scores = images_per_second(classifier, images, "fp32")
            bf16, bf16_scores = images_per_second(classifier, images, "bf16")
            print(f"{name:9s} {fp32:10.1f} {bf16:10.1f} {bf16 / fp32:6.2f}x {np.abs(bf16_scores - fp32_scores).max():10.4f}")


if __name__ == "__main__":
    main()
