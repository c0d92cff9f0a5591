"""Training precision: bf16 autocast (the default, on GPU and on CPU) or plain fp32.

Autocast keeps the weights, the optimizer state and the loss reductions in fp32 and runs
matrix products in bf16. On a CPU with AVX-512 BF16 (or AMX) a bf16 matrix product is
2 to 3x faster than fp32 (``python -m benchmark.perf.precision``); on a CPU without it
PyTorch emulates bf16 and ``fp32`` is the faster setting.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn

PRECISIONS = ("bf16", "fp32")


def training_autocast(device: torch.device, precision: str):
    """The context a training step's forward and loss run in."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def prefer_unfused_attention(model: nn.Module, device: torch.device, precision: str) -> int:
    """Under CPU bf16, switch timm's attention blocks from PyTorch's fused
    scaled-dot-product kernel to its explicit ``softmax(q k^T) v``: the same function, but
    the fused kernel's CPU backward in bf16 is several times slower than the matrix products
    around it (measured in ``benchmark/perf/precision.py``). Returns how many blocks changed."""
    if device.type != "cpu" or precision != "bf16":
        return 0
    changed = 0
    for module in model.modules():
        if getattr(module, "fused_attn", False) is True:
            module.fused_attn = False
            changed += 1
    return changed


def _fp32_forward(self, x):
    with torch.autocast(x.device.type, enabled=False):
        return super(type(self), self).forward(x.float())


_FP32_CLASSES: dict[type, type] = {}


def fp32_depthwise_convolutions(model: nn.Module, device: torch.device, precision: str) -> int:
    """Under CPU bf16, run depthwise convolutions (EfficientNet's) in fp32: PyTorch's CPU
    bf16 depthwise kernel is slower than its fp32 one, so the tiny EfficientNet trains
    faster in bf16 with these in fp32 than in either precision throughout
    (``benchmark/perf/precision.py``). Each such convolution gets a subclass of its own class
    whose forward leaves autocast; weights and state-dict keys are unchanged. Returns how
    many changed."""
    if device.type != "cpu" or precision != "bf16":
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            cls = type(module)
            if cls not in _FP32_CLASSES.values():
                module.__class__ = _FP32_CLASSES.setdefault(
                    cls, type(f"Fp32{cls.__name__}", (cls,), {"forward": _fp32_forward}))
                changed += 1
    return changed


def prefer_fast_cpu_kernels(model: nn.Module, device: torch.device, precision: str) -> int:
    """Both of the above: what a training step on a CPU in bf16 runs faster with."""
    return prefer_unfused_attention(model, device, precision) + fp32_depthwise_convolutions(model, device, precision)
