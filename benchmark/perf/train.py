"""Training throughput of one model: is the data loader fast enough, and how busy is the chip?

    python -m benchmark bench-train --model mama --preset tiny [--steps 10] [--batch N]

Builds the real data path (``PretrainDataset`` + ``collate``, the model's own augmentations
and batch needs) over in-memory random images and EMBED-like records (or, with
``--streamed-from SIDE``, random 16-bit PNGs of that long side read as they are indexed, as
pretraining does above ``images.memory_gib``), then measures, in one run:

- loader samples/s: batches drawn through the DataLoader alone;
- training samples/s: full optimizer steps (forward, backward, AdamW) on batches drawn
  beforehand, so the two numbers are separable; their ratio says whether the loader can
  keep up (it should be at least 2x);
- achieved TFLOP/s from ``torch.utils.flop_counter`` on one step, and on a GPU the MFU
  against the card's dense bf16 peak (a table below; unknown cards print n/a).

Paper presets build with random weights (no weights needed); on a GPU they run with
gradient checkpointing where the preset asks for it. Steps run under ``--precision`` (``auto`` by
default, as the trainer: bf16 autocast where the device has it natively; ``benchmark/precision.py``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.images import StreamedImages, image_hw
from benchmark.data.tokenizer import train_tokenizer
from benchmark.precision import (
    DEFAULT_PRECISION,
    precision_context,
    prefer_fast_cpu_kernels,
    resolve_precision,
)
from benchmark.registry import build_model
from benchmark.train import PretrainDataset, model_collate

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.4, "A100": 312.0,
                    "L40S": 362.0, "A10": 125.0}


def peak_tflops(device_name: str) -> float | None:
    name = device_name.upper()
    for key, value in sorted(PEAK_BF16_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        words = key.upper().split()
        if all(w in name for w in words):
            return value
    if "H100" in name:  # "NVIDIA H100 80GB HBM3" is the SXM part
        return PEAK_BF16_TFLOPS["H100 SXM"]
    return None


def synthetic_records(n: int, seed: int = 0) -> pd.DataFrame:
    """EMBED-like rows: four views per exam, the fields captions and label vectors read."""
    rng = np.random.default_rng(seed)
    exams = np.arange(n) // 4
    sides = np.tile(["L", "L", "R", "R"], n // 4 + 1)[:n]
    return pd.DataFrame({
        "exam_id": [f"e{e}" for e in exams], "patient_id": [f"p{e // 2}" for e in exams],
        "breast_id": [f"e{e}_{side}" for e, side in zip(exams, sides)],
        "study_description": "MG Screening Bilateral", "reason": "screening",
        "age": rng.integers(40, 80, n).astype(str), "race": "Unknown", "ethnicity": "Unknown",
        "image_type": "2D", "laterality": sides,
        "view": np.tile(["CC", "MLO"], n // 2 + 1)[:n],
        "density": rng.integers(1, 5, n), "birads": rng.integers(0, 7, n),
        "massshape": np.where(rng.random(n) < 0.1, "R", ""), "calcfind": np.where(rng.random(n) < 0.1, "P", ""),
    })


def synthetic_tokenizer(path: Path) -> str:
    """A BPE tokenizer trained on the synthetic records' reports, for random-weight text towers."""
    texts = [join_sentences(embed_sentences(r)) for r in synthetic_records(2000).to_dict("records")]
    train_tokenizer(texts, 2000, str(path))
    return str(path)


def write_random_pngs(folder: Path, n: int, long_side: int, bits: int = 16, aspect: float = 0.8) -> list[str]:
    """``n`` random 8- or 16-bit PNGs of a mammogram's aspect (long side x ``aspect`` long side)."""
    rng = np.random.default_rng(0)
    dtype = np.uint8 if bits <= 8 else np.uint16
    names = [f"{i}.png" for i in range(n)]
    for name in names:
        pixels = rng.integers(0, np.iinfo(dtype).max, (long_side, int(aspect * long_side)), dtype=dtype, endpoint=True)
        Image.fromarray(pixels).save(folder / name)
    return names


def bench_train(model_name: str, preset: str, steps: int, batch: int | None, tokenizer: str | None,
                threads: int, loader_workers: int, streamed_from: int | None = None, precision: str = DEFAULT_PRECISION,
                math_attention: bool = True, channels_last: bool = True) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer is None:  # random-weight text towers need one
            tokenizer = synthetic_tokenizer(Path(tmp) / "tokenizer.json")
        model = build_model(model_name, preset, tokenizer=tokenizer)
    if preset == "paper" and device.type == "cuda":
        model.set_grad_checkpointing(True)
    model.to(device).train()
    precision = resolve_precision(precision, device)
    prefer_fast_cpu_kernels(model, device, precision)
    if not channels_last:  # PyTorch's default layout, for benchmark/perf/precision.py's comparison only
        model.to(memory_format=torch.contiguous_format)
    batch = batch or model.train_settings["batch_size"]
    n = batch * 4
    records = synthetic_records(n)
    png_dir = tempfile.TemporaryDirectory() if streamed_from else None
    if png_dir:
        images = StreamedImages(Path(png_dir.name), write_random_pngs(Path(png_dir.name), n, streamed_from),
                                model.image_size)
    else:
        images = torch.randint(0, 256, (n, 1, *image_hw(model.image_size)), dtype=torch.uint8)
    data = PretrainDataset(records, images, model.augment, 0.8, 0, model.batch_needs,
                           text_augment=getattr(model, "text_augment", None))
    loader = DataLoader(_Keyed(data, [(0, i) for i in range(n)]), batch_size=batch, shuffle=True,
                        collate_fn=model_collate(model), num_workers=loader_workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda",
                        persistent_workers=loader_workers > 0)

    batches, start = [], time.perf_counter()
    while len(batches) < steps + 2:
        for b in loader:
            batches.append(b)
            if len(batches) == steps + 2:
                break
    loader_rate = len(batches) * batch / (time.perf_counter() - start)
    if png_dir:
        png_dir.cleanup()

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    autocast = precision_context(device, precision, math_attention)

    def step(b):
        b = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        with autocast:
            loss = model.training_loss(b | {"step": 10**9, "epoch": 1})["loss"]  # every loss term on
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops_per_step = counter.get_total_flops()
    step(batches[1])  # warm-up (allocator, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches[2:]:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tflops = flops_per_step / seconds / 1e12
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = peak_tflops(name) if device.type == "cuda" else None
    return {"model": model_name, "preset": preset, "device": name, "batch": batch, "steps": steps,
            "precision": precision, "images": f"streamed from {streamed_from} px PNGs" if streamed_from else "in memory",
            "loader_workers": loader_workers,
            "train_samples_per_s": batch / seconds, "loader_samples_per_s": loader_rate,
            "loader_over_train": loader_rate / (batch / seconds), "tflops_per_step": flops_per_step / 1e12,
            "achieved_tflops": tflops, "peak_tflops": peak, "mfu": tflops / peak if peak else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


class _Keyed(torch.utils.data.Dataset):
    """Plain indices to the (epoch, index) keys PretrainDataset takes."""

    def __init__(self, data: PretrainDataset, keys: list[tuple[int, int]]):
        self.data, self.keys = data, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        return self.data[self.keys[i]]


def format_result(r: dict) -> str:
    mfu = f"{100 * r['mfu']:.1f} % of {r['peak_tflops']:.0f}" if r["mfu"] is not None else "n/a (no GPU peak known)"
    return (f"bench-train {r['model']}/{r['preset']} on {r['device']} ({r['precision']}), batch {r['batch']}, "
            f"{r['steps']} steps, "
            f"images {r['images']}, {r['loader_workers']} loader workers\n"
            f"  training   {r['train_samples_per_s']:9.1f} samples/s\n"
            f"  loader     {r['loader_samples_per_s']:9.1f} samples/s  ({r['loader_over_train']:.1f}x training; "
            f"target >= 2x)\n"
            f"  compute    {r['achieved_tflops']:9.3f} TFLOP/s ({r['tflops_per_step']:.3f} TFLOP per step); "
            f"MFU {mfu}")
