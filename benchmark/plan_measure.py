"""One model's training step measured on this CPU, for the capacity plan (``benchmark/plan.py``).

    python -m benchmark.plan_measure '<spec as JSON>'      (the plan starts it; prints JSON)

Each model variant is measured in a fresh process, so that its peak memory is its own:
``clear_refs`` resets the kernel's peak-resident counter (VmHWM) before each measured step,
and before the memory steps glibc's mmap threshold is fixed at 64 KiB (``mallopt``) so that
freed tensors go back to the kernel at once (else one step's freed pages would hide the
next step's peak). The timed steps run before that: page faults on every large allocation
would slow them. What one process measures, on the real data path (``PretrainDataset`` and
the model's collate over random images and EMBED-like records) and the trainer's
optimizer, every loss term on:

- ``flops_per_step`` at batch 2, from the ledger's counter (``torch.utils.flop_counter``);
- ``loader_samples_per_s`` on one core: items drawn from random PNGs of the cache's long
  side and bit depth (``StreamedImages``: decode, fit to the model input) through the
  model's augmentations, with every view it needs, and collated;
- ``step_seconds`` at batch 2 and at 4 (else 3), each shape's second step, under the
  trainer's CPU precision (``auto``: bf16 autocast with math attention where this CPU has
  bf16 in hardware, else fp32): this machine's speed, for the CPU presets' time prediction;
- at batches 2, 3 and 4 without gradient checkpointing and 2 and 3 with it, the resident
  memory a step adds above the weights and Adam's moments: ``forward_bytes`` at the end of
  the forward pass (autocast's weight copies and the activations kept for the backward:
  linear in the batch, the part the plan extrapolates) and ``step_bytes`` at the step's
  peak (gradients and the optimizer's temporaries too), in bf16 autocast (what the paper
  presets run in on a GPU, whatever this CPU's own precision), with the fused attention kernel
  (O(n) memory, as flash attention on a GPU; the math kernel would store every attention
  matrix) and the CPU kernels the trainer picks for bf16 (``prefer_fast_cpu_kernels``).
  Where the timed steps ran in fp32, each batch shape first takes one unmeasured bf16 step:
  a shape's first step in a precision keeps one-off buffers that would bend the line.

A step that would take more than four fifths of the memory available (judged from the
batch-2 step's growth, then from the fit) is not run, and ``skipped`` says so: Mammo-CLIP's
EfficientNet-B5 at 1520 x 912 adds about 5 GiB per sample, so on a 24 GiB machine its
check at batch 4 is skipped. ``PROCEDURE`` names these steps: the plan's cache of
measurements is keyed by it, so change it with them.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path

MEMORY_BATCHES = (2, 3, 4)  # the plan fits a line on 2 and 3 and checks it at 4
TIME_BATCHES = (2, 4, 3)  # 2, and the larger of 4 and 3 that fits this machine's memory
PROCEDURE = 3  # the steps above; the plan's cached measurements are keyed by it
MEMORY_PRECISION = "bf16"  # the memory steps': what the paper presets train in on a GPU
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _status(field: str) -> int:
    """A ``/proc/self/status`` size (kB there), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def meminfo(field: str) -> int:
    """A ``/proc/meminfo`` size, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/meminfo has no {field}")


def _libc():
    import ctypes

    return ctypes.CDLL("libc.so.6")


def _return_freed_memory() -> None:
    """glibc: serve every allocation above 64 KiB by mmap, so that freeing returns it."""
    libc = _libc()
    if not (libc.mallopt(M_MMAP_THRESHOLD, 65536) and libc.mallopt(M_TRIM_THRESHOLD, 0)):
        raise RuntimeError("mallopt refused the mmap threshold")


def _release_and_reset_peak() -> None:
    """Free heap pages back to the kernel, then VmHWM back to the resident size."""
    _libc().malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def measure(spec: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark.data.images import image_hw
    from benchmark.perf.train import synthetic_records, synthetic_tokenizer
    from benchmark.precision import (
        DEFAULT_PRECISION,
        fused_where_supported,
        precision_context,
        prefer_fast_cpu_kernels,
        resolve_precision,
    )
    from benchmark.registry import build_model
    from benchmark.train import PretrainDataset, model_collate

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = synthetic_tokenizer(Path(tmp) / "tokenizer.json")
        model = build_model(spec["method"], spec["preset"], tokenizer=tokenizer, **spec["overrides"])
    model.train()
    prefer_fast_cpu_kernels(model, cpu, DEFAULT_PRECISION)
    n = 4 * max(MEMORY_BATCHES)
    images = torch.randint(0, 256, (n, 1, *image_hw(model.image_size)), dtype=torch.uint8)
    data = PretrainDataset(synthetic_records(n), images, model.augment, 0.8, 0, model.batch_needs,
                           text_augment=getattr(model, "text_augment", None))
    collate = model_collate(model)
    loader_rate = _loader_rate(model, spec["loader"], collate)
    torch.set_num_threads(spec["threads"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-6, fused=fused_where_supported(trainable))

    def batch(size: int) -> dict:
        return collate([data[(0, i)] for i in range(size)])

    def step(b: dict, math_attention: bool, precision: str = DEFAULT_PRECISION) -> None:
        with precision_context(cpu, precision, math_attention):
            loss = model.training_loss(b | {"step": 10**9, "epoch": 1})["loss"]  # every loss term on
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def memory_step(b: dict) -> tuple[int, int]:
        """A step's resident growth at the end of its forward pass (autocast's weight copies
        and the activations kept for the backward) and at its peak."""
        gc.collect()
        _release_and_reset_peak()
        before = _status("VmRSS")
        with precision_context(cpu, MEMORY_PRECISION, math_attention=False):
            loss = model.training_loss(b | {"step": 10**9, "epoch": 1})["loss"]
            forward = _status("VmHWM") - before
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return forward, _status("VmHWM") - before

    _release_and_reset_peak()
    before = _status("VmRSS")
    with FlopCounterMode(display=False) as counter:  # also the warm-up: Adam's moments exist after it
        step(batch(2), math_attention=True)
    # This first step also made Adam's moments, the gradients and autocast's bf16 weight
    # copies; what is left of its growth is the batch's (an upper bound per sample).
    every = sum(p.numel() for p in model.parameters())
    fixed = 4 * sum(p.numel() for p in trainable) + 2 * every  # gradients (fp32) and bf16 copies, every step
    per_sample = max(_status("VmHWM") - before - fixed - 8 * sum(p.numel() for p in trainable), 0) / 2

    def fits(added: float) -> bool:
        """Whether a step adding ``added`` resident bytes leaves a fifth of what is available."""
        return added < 0.8 * meminfo("MemAvailable")

    result = {"loader_samples_per_s": loader_rate, "flops_per_step": int(counter.get_total_flops()),
              "flops_batch": 2, "step_seconds": {}, "forward_bytes": {}, "step_bytes": {},
              "forward_bytes_checkpointed": {}, "step_bytes_checkpointed": {}, "skipped": []}
    larger = [size for size in TIME_BATCHES[1:] if fits(fixed + per_sample * size)][:1]  # 4, else 3, else none
    for size in (2, *larger):
        b = batch(size)
        if size != 2:  # a new shape's first step pays one-off costs (kernels, caches); 2 had the FLOP step
            step(b, math_attention=True)
        start = time.perf_counter()
        step(b, math_attention=True)
        result["step_seconds"][str(size)] = time.perf_counter() - start
    if not fits(fixed + per_sample * 3):
        result["skipped"].append(f"memory: a step at batch 3 would add about {(fixed + per_sample * 3) / 2**30:.1f} GiB, "
                                 f"more than this machine can spare ({meminfo('MemAvailable') / 2**30:.1f} GiB "
                                 "available)")
        result["resident_bytes"] = _status("VmRSS")
        return result
    batches = {size: batch(size) for size in MEMORY_BATCHES}
    # A shape's first step in a precision keeps one-off buffers (kernels, caches): warm each
    # shape the memory steps use in their precision, unless a timed step already did.
    timed_in_memory_precision = resolve_precision(DEFAULT_PRECISION, cpu) == MEMORY_PRECISION
    prefer_fast_cpu_kernels(model, cpu, MEMORY_PRECISION)  # the kernels a bf16 trainer runs (fp32 timing had others)
    for size in MEMORY_BATCHES:
        if size == 4 and "4" not in result["step_seconds"]:
            continue  # too large for this machine: its memory check is skipped below
        if not (timed_in_memory_precision and str(size) in result["step_seconds"]):
            step(batches[size], math_attention=False, precision=MEMORY_PRECISION)
    _return_freed_memory()
    for checkpointed, suffix in ((False, ""), (True, "_checkpointed")):
        model.set_grad_checkpointing(checkpointed)
        for size in MEMORY_BATCHES if not checkpointed else MEMORY_BATCHES[:2]:  # the fit's batches
            if size == 4:
                grown = result["step_bytes"]["3"] + (result["step_bytes"]["3"] - result["step_bytes"]["2"])
                if "4" not in result["step_seconds"] or not fits(grown):
                    result["skipped"].append("the memory check at batch 4: its step would take more memory than "
                                             f"this machine can spare ({meminfo('MemAvailable') / 2**30:.1f} GiB "
                                             "available)")
                    continue
            forward, peak = memory_step(batches[size])
            result["forward_bytes" + suffix][str(size)] = forward
            result["step_bytes" + suffix][str(size)] = peak
    result["resident_bytes"] = _status("VmRSS")
    return result


def _loader_rate(model, loader: dict, collate, items: int = 16) -> float:
    """Samples/s of the pretraining data path on one core (module docstring)."""
    from benchmark.data.images import StreamedImages
    from benchmark.disk_space import CACHE_ASPECT
    from benchmark.perf.train import synthetic_records, write_random_pngs
    from benchmark.train import PretrainDataset

    with tempfile.TemporaryDirectory() as folder:
        names = write_random_pngs(Path(folder), 8, loader["long_side"], loader["bits"], CACHE_ASPECT)  # two exams
        data = PretrainDataset(synthetic_records(len(names)), StreamedImages(Path(folder), names, model.image_size),
                               model.augment, 0.8, 0, model.batch_needs,
                               text_augment=getattr(model, "text_augment", None))
        collate([data[(0, 0)]])  # warm-up
        start = time.perf_counter()
        collate([data[(1, i % len(names))] for i in range(items)])
        return items / (time.perf_counter() - start)


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
