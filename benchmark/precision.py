"""Precision and CPU kernel choices: bf16 autocast or plain fp32 for training and the
fine-tune's predictions (``auto``, the default: bf16 where the device multiplies bf16 in
hardware, fp32 elsewhere), and the layouts and kernels a
model runs faster with on a CPU (``prefer_fast_cpu_kernels``: channels-last convolutions
everywhere, fp32 depthwise convolutions under bf16), and the fused Adam/AdamW update
(``fused_where_supported``) training and the fine-tune use.

Autocast keeps the weights, the optimizer state and the loss reductions in fp32 and runs
matrix products in bf16. On a CPU with AVX-512 BF16 (or AMX) a bf16 matrix product is
2 to 3x faster than fp32 (``python -m benchmark.perf.precision``); on a CPU without it
PyTorch emulates bf16, and the tiny presets train 1.5 to 2.4x slower in bf16 than in fp32
(a Xeon with AVX-512 but not its BF16 extension, docs/performance.md): hence ``auto``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT_PRECISION = "auto"  # the schema's default for pretrain.precision and finetune.precision


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix products in hardware: a CUDA GPU that supports
    bf16, or a CPU with AVX-512 BF16 or AMX tiles. (oneDNN's own check also says yes on a
    plain AVX-512 CPU, where it emulates bf16; hence the instruction sets.)"""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return any(check() for check in checks if check is not None)
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision that runs: ``bf16`` or ``fp32`` as given, and ``auto`` as bf16 where
    ``native_bf16(device)``, else fp32. Ledgers and fine-tune records keep the resolved one."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


class _CpuBf16:
    """bf16 autocast with PyTorch's math attention kernel; reusable like ``torch.autocast``."""

    def __init__(self, math_attention: bool):
        self.math_attention = math_attention
        self._entered = []

    def __enter__(self):
        contexts = [torch.autocast("cpu", dtype=torch.bfloat16)]
        if self.math_attention:
            contexts.append(sdpa_kernel(SDPBackend.MATH))
        for context in contexts:
            context.__enter__()
        self._entered.append(contexts)
        return self

    def __exit__(self, *exc):
        for context in reversed(self._entered.pop()):
            context.__exit__(*exc)
        return False


def precision_context(device: torch.device, precision: str, math_attention: bool = True):
    """The context that applies ``precision`` to a model's computation: a training step's
    forward, loss and backward (pretraining and fine-tune), and the fine-tune's predictions.
    bf16 is autocast; fp32 is nothing; auto is either (``resolve_precision``). On a CPU in bf16, attention
    (``scaled_dot_product_attention``: timm's and Hugging Face's blocks, and open_clip's
    through ``nn.MultiheadAttention``) runs PyTorch's math kernel, the same function as
    the fused one: the fused kernel's bf16 CPU backward is several times slower than the
    matrix products around it (``benchmark/perf/precision.py``; ``math_attention=False``
    keeps the fused kernel, for that measurement only). Run the backward inside it too:
    with activation checkpointing the backward recomputes forward blocks, which must pick
    the same kernels (checkpointing restores the autocast state, not the attention kernel)."""
    if resolve_precision(precision, device) == "fp32":
        return nullcontext()
    if device.type == "cpu":
        return _CpuBf16(math_attention)
    return torch.autocast(device.type, dtype=torch.bfloat16)


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
    if device.type != "cpu" or resolve_precision(precision, device) != "bf16":
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


def channels_last_convolutions(model: nn.Module, device: torch.device) -> bool:
    """On a CPU, store a model's convolution weights channels-last, so that its convolutions,
    batch norms and max pools run in that layout (oneDNN's) in either precision. PyTorch's
    default NCHW max pool is the slow one: 79 ms against 5 ms for a (64, 64, 48, 48) batch,
    a fifth of a tiny ResNet's training step (``benchmark/perf/precision.py``). Only the
    memory layout changes: parameters, state-dict keys and checkpoints stay the same, and
    outputs agree to float rounding. Returns whether the model has convolutions."""
    if device.type != "cpu" or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def prefer_fast_cpu_kernels(model: nn.Module, device: torch.device, precision: str) -> None:
    """What a model runs faster with on a CPU, besides ``precision_context``'s attention
    kernel: channels-last convolutions, and in bf16 fp32 depthwise convolutions."""
    channels_last_convolutions(model, device)
    fp32_depthwise_convolutions(model, device, precision)


def fused_where_supported(params: list[torch.Tensor]) -> bool | None:
    """``fused=True`` for Adam and AdamW when every parameter is a float tensor on a CPU or a
    CUDA device, else None (PyTorch's default, one kernel per parameter tensor on a CPU).
    The fused kernel updates all tensors in one pass: 4 to 6 times faster on a CPU for the
    tiny presets' 80 to 140 tensors, the same update up to float rounding
    (``python -m benchmark.perf.optimizer``)."""
    ok = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return True if ok and params else None
