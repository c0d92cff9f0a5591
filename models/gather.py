"""Contrastive negatives from every rank of a data-parallel run.

``Gather.rows`` concatenates every rank's rows in rank order, with gradient flowing back
to each rank's own rows (``torch.distributed.nn`` sums the gradients all ranks computed
for them). A batch-coupled loss computed on the gathered rows is then the very loss of
the global batch on every rank; after DDP averages the gradients, training equals one
process on the global batch. Per-sample losses need no gathering.

Every loss that contrasts across the batch holds a ``Gather`` (open_clip's ``ClipLoss``
holds its rank, world size and ``local_loss`` the same way) and gathers its own inputs.
The trainer hands the run's setting to a model's losses with ``set_gather(model,
Gather(enabled=...))``; ``enabled=False`` reproduces the official MaMA code, whose
negatives are only the rank's own batch. Outside a distributed run nothing is gathered.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous: the gloo all-to-all inside
    ``all_gather``'s backward sends wrong data for non-contiguous gradients (e.g. from einsum)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


@dataclass(frozen=True)
class Gather:
    """Whether a loss contrasts against every rank's rows (True) or its own rank's only."""

    enabled: bool = True

    def active(self) -> bool:
        return self.enabled and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def rows(self, x_n: torch.Tensor) -> torch.Tensor:
        """(N, ...) on each rank -> (world * N, ...), every rank's rows in rank order."""
        if not self.active():
            return x_n
        with warnings.catch_warnings():  # its private successor is not yet a public API
            warnings.simplefilter("ignore", FutureWarning)
            parts = dist_fn.all_gather(x_n.contiguous())
        return torch.cat([_ContiguousGrad.apply(part) for part in parts], dim=0)

    def padded(self, x_ns: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Like ``rows`` for (N, S, ...) whose S differs between ranks (sentences per report):
        pads dim 1 to the largest S first, with ``fill``."""
        if not self.active():
            return x_ns
        longest = torch.tensor([x_ns.shape[1]], device=x_ns.device)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        pad = int(longest.item()) - x_ns.shape[1]
        if pad:
            widths = [0, 0] * (x_ns.dim() - 2) + [0, pad]
            x_ns = F.pad(x_ns, widths, value=fill)
        return self.rows(x_ns)


GATHER_ALL = Gather()  # the default of every loss: negatives from every rank (immutable, so shared)


def set_gather(model: torch.nn.Module, gather: Gather) -> None:
    """Give every loss of ``model`` that holds a ``Gather`` the run's setting."""
    for module in model.modules():
        if isinstance(getattr(module, "gather", None), Gather):
            module.gather = gather
