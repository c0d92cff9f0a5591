"""Pretraining speed of each tiny preset: the trainer in bf16 (autocast, and on CPU the math
attention kernel, channels-last convolutions and fp32 depthwise convolutions) against fp32
steps, against bf16 with PyTorch's fused attention kernel and against bf16 in PyTorch's
default NCHW layout, measured in the same run.

    python -m benchmark.perf.precision [--threads 1 2] [--steps 8]

For each model and thread count it prints training samples/s in each setting and the bf16
trainer's ratio to each, and the default run's pretraining time for one seed at the measured rates
(``pretrain.samples_seen`` over samples/s, summed over the methods). A single matrix
product of the tiny ViT's MLP shape is timed first, as the bound on what bf16 can give.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmark.perf import default_budget
from benchmark.perf.train import bench_train

MODELS = ("clip", "convirt", "mgca", "medclip", "mama", "mammoclip")
DEFAULT_SAMPLES = default_budget()[0]  # config/config.yaml pretrain.samples_seen


def matmul_seconds(dtype: torch.dtype, repeats: int = 50) -> float:
    a, b = torch.randn(1968, 192).to(dtype), torch.randn(192, 768).to(dtype)  # 48 images x 41 tokens, MLP
    for _ in range(5):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()

    torch.set_num_threads(max(args.threads))
    fp32, bf16 = matmul_seconds(torch.float32), matmul_seconds(torch.bfloat16)
    print(f"one (1968 x 192) @ (192 x 768) product: fp32 {fp32 * 1e3:.2f} ms, bf16 {bf16 * 1e3:.2f} ms, "
          f"{fp32 / bf16:.2f}x\n")
    # the trainer in bf16, and each alternative differing from it in one choice
    settings = {"fp32": dict(precision="fp32"), "fused": dict(precision="bf16", math_attention=False),
                "nchw": dict(precision="bf16", channels_last=False), "bf16": dict(precision="bf16")}
    alternatives = [key for key in settings if key != "bf16"]
    print(f"{'model':9s} {'threads':>7s} " + " ".join(f"{key + ' /s':>9s}" for key in settings) + " "
          + " ".join(f"{'x ' + key:>7s}" for key in alternatives))
    totals = {}
    for threads in args.threads:
        for name in args.models:
            rates = {key: bench_train(name, "tiny", args.steps, None, None, threads, 0, **choice)["train_samples_per_s"]
                     for key, choice in settings.items()}
            for key, rate in rates.items():
                totals[(threads, key)] = totals.get((threads, key), 0.0) + DEFAULT_SAMPLES / rate
            print(f"{name:9s} {threads:7d} " + " ".join(f"{rate:9.1f}" for rate in rates.values()) + " "
                  + " ".join(f"{rates['bf16'] / rates[key]:6.2f}x" for key in alternatives))
    print(f"\ntraining seconds of one seed of the default run ({DEFAULT_SAMPLES} samples per method, "
          f"{', '.join(args.models)}), excluding start-up:")
    for threads in args.threads:
        bf16 = totals[(threads, "bf16")]
        print(f"  {threads} thread(s): bf16 {bf16:.0f} s; " + ", ".join(
            f"{key} {totals[(threads, key)]:.0f} s ({totals[(threads, key)] / bf16:.2f}x)" for key in alternatives))


if __name__ == "__main__":
    main()
