"""Contrastive negatives from every rank of a data-parallel run.

``gather_rows`` concatenates every rank's rows in rank order, with gradient flowing back
to each rank's own rows (``torch.distributed.nn`` sums the gradients all ranks computed
for them). A batch-coupled loss computed on the gathered rows is then the very loss of
the global batch on every rank; after DDP averages the gradients, training equals one
process on the global batch. Per-sample losses need no gathering.

The trainer switches gathering off with ``set_gather_negatives(False)`` to reproduce the
official MaMA code, whose negatives are only the rank's own batch. Outside a distributed
run every function here returns its input.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F

_gather_negatives = True


def set_gather_negatives(enabled: bool) -> None:
    global _gather_negatives
    _gather_negatives = bool(enabled)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous: the gloo all-to-all inside
    ``all_gather``'s backward sends wrong data for non-contiguous gradients (e.g. from einsum)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def _active() -> bool:
    return _gather_negatives and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rows(x_n: torch.Tensor) -> torch.Tensor:
    """(N, ...) on each rank -> (world * N, ...), every rank's rows in rank order."""
    if not _active():
        return x_n
    with warnings.catch_warnings():  # its private successor is not yet a public API
        warnings.simplefilter("ignore", FutureWarning)
        parts = dist_fn.all_gather(x_n.contiguous())
    return torch.cat([_ContiguousGrad.apply(part) for part in parts], dim=0)


def gather_padded(x_ns: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Like ``gather_rows`` for (N, S, ...) whose S differs between ranks (sentences per
    report): pads dim 1 to the largest S first, with ``fill``."""
    if not _active():
        return x_ns
    longest = torch.tensor([x_ns.shape[1]], device=x_ns.device)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    pad = int(longest.item()) - x_ns.shape[1]
    if pad:
        widths = [0, 0] * (x_ns.dim() - 2) + [0, pad]
        x_ns = F.pad(x_ns, widths, value=fill)
    return gather_rows(x_ns)
