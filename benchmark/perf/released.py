"""What evaluating a released checkpoint costs: image encoding, the step that dominates it.

    python -m benchmark.perf.released [--method mammoclip --preset paper] [--images 4] [--threads 2]
                                      [--dataset-images 20000] [--mfu 0.3]

Measured here: seconds per image of ``encode_image`` (fp32, this machine's CPU, random
weights: the time does not depend on them) for the paper preset at its own input size, and
against it, in the same run, the method's tiny preset (the ratio is what to compare across
machines). FLOPs per image from ``torch.utils.flop_counter`` (the counter the compute ledger
uses). Estimated, not measured: the whole dataset on this CPU (seconds per image x images;
every image is encoded once, all protocols but the fine-tune read those features) and on
one H100 (FLOPs / (bf16 dense peak 989 TFLOP/s x ``--mfu``)); on a GPU the DICOM decoding
and preprocessing, not the model, set the pace (benchmark/perf/preprocess.py).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmark.registry import build_model

H100_BF16_DENSE = 989e12  # FLOP/s, NVIDIA's H100 SXM datasheet (dense, without sparsity)


def image_cost(method: str, preset: str, n_images: int) -> tuple[float, float, tuple[int, int]]:
    """(seconds per image, FLOPs per image, input height x width) of encode_image."""
    model = build_model(method, preset).eval()
    size = model.image_size
    height, width = (size, size) if isinstance(size, int) else size
    images = torch.randn(n_images, 3, height, width)
    with torch.no_grad():
        model.encode_image(images[:1])  # warm-up (allocations, kernels chosen)
        counter = FlopCounterMode(display=False)
        with counter:
            model.encode_image(images[:1])
        start = time.perf_counter()
        model.encode_image(images)
        seconds = (time.perf_counter() - start) / n_images
    return seconds, float(counter.get_total_flops()), (height, width)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="mammoclip")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--images", type=int, default=4, help="images encoded in the timed batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dataset-images", type=int, default=20000, help="VinDr-Mammo: 5,000 four-view studies")
    parser.add_argument("--mfu", type=float, default=0.3, help="share of the GPU's peak reached (an assumption)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tiny_s, tiny_flops, tiny_size = image_cost(args.method, "tiny", args.images)
    paper_s, paper_flops, paper_size = image_cost(args.method, args.preset, args.images)
    print(f"{args.method}/tiny   {tiny_size[0]} x {tiny_size[1]}: {tiny_s * 1e3:9.1f} ms/image, "
          f"{tiny_flops / 1e9:8.2f} GFLOP/image (measured, {args.threads} threads)")
    print(f"{args.method}/{args.preset} {paper_size[0]} x {paper_size[1]}: {paper_s * 1e3:9.1f} ms/image, "
          f"{paper_flops / 1e9:8.2f} GFLOP/image (measured, {args.threads} threads)")
    print(f"ratio {args.preset} / tiny: {paper_s / tiny_s:.0f}x time, {paper_flops / tiny_flops:.0f}x FLOPs; "
          f"CPU rate {paper_flops / paper_s / 1e9:.0f} GFLOP/s")
    cpu_hours = paper_s * args.dataset_images / 3600
    gpu_minutes = paper_flops * args.dataset_images / (H100_BF16_DENSE * args.mfu) / 60
    print(f"estimate, {args.dataset_images} images encoded once: {cpu_hours:.1f} h on this CPU; "
          f"{gpu_minutes:.1f} min of model time on one H100 at {args.mfu:.0%} MFU (bf16 dense peak "
          f"{H100_BF16_DENSE / 1e12:.0f} TFLOP/s; an estimate, no GPU measured)")


if __name__ == "__main__":
    main()
