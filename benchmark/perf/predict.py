"""Fine-tune predictions and feature extraction of each tiny preset on a CPU: today's
layout (channels-last convolutions) against PyTorch's default NCHW, in fp32 (how features
and zero-shot scores are computed) and under bf16 autocast (how the fine-tune scores its
validation and test images), measured in the same run.

    python -m benchmark.perf.predict [--images 312] [--threads 1]

A default-run fine-tune job scores about 3,400 images (validation every ``eval_every``
steps and the test split, for each of its seven cells); a features job encodes every image
of its dataset. For each model it prints images/s in each setting (cl: channels-last),
today's ratios to NCHW and to fp32, and the largest differences of class probabilities:
bf16 against fp32, and channels-last against NCHW in fp32.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmark.data.images import image_hw
from benchmark.evaluate.finetune import Classifier, predict
from benchmark.perf.precision import MODELS
from benchmark.perf.train import synthetic_tokenizer
from benchmark.precision import channels_last_convolutions
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
    cpu = torch.device("cpu")
    settings = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]  # (precision, channels-last)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = synthetic_tokenizer(Path(tmp) / "tokenizer.json")
        print(f"{'model':9s} " + " ".join(f"{p + (' cl' if cl else ' nchw'):>10s}" for p, cl in settings)
              + f" {'x nchw fp32':>11s} {'x nchw bf16':>11s} {'x fp32':>7s} {'|bf16-fp32|':>11s} {'|cl-nchw|':>9s}")
        for name in args.models:
            torch.manual_seed(0)
            nchw = Classifier(build_model(name, "tiny", tokenizer=tokenizer), 4).eval()
            channels_last = copy.deepcopy(nchw)
            channels_last_convolutions(channels_last, cpu)
            images = torch.randint(0, 256, (args.images, 1, *image_hw(nchw.model.image_size)), dtype=torch.uint8)
            rates, scores = {}, {}
            for precision, cl in settings:
                rates[precision, cl], scores[precision, cl] = images_per_second(
                    channels_last if cl else nchw, images, precision)
            print(f"{name:9s} " + " ".join(f"{rates[s]:10.1f}" for s in settings)
                  + f" {rates['fp32', True] / rates['fp32', False]:10.2f}x"
                  f" {rates['bf16', True] / rates['bf16', False]:10.2f}x"
                  f" {rates['bf16', True] / rates['fp32', True]:6.2f}x"
                  f" {np.abs(scores['bf16', True] - scores['fp32', True]).max():11.4f}"
                  f" {np.abs(scores['fp32', True] - scores['fp32', False]).max():9.1e}")

if __name__ == "__main__":
    main()
