"""Data-parallel plumbing: which rank this process is, as torchrun tells it.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and GROUP_WORLD_SIZE (its agents: the nodes);
without them the run is one process and every helper here is a no-op. The backend is nccl
on GPU and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    nodes: int = 1  # torchrun agents (one per node of a multi-node job)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Ranks:
    """Join the torchrun process group if this process was started by torchrun."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Ranks()
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)),
                  int(os.environ.get("GROUP_WORLD_SIZE", 1)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ranks


def close_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average logged scalars over ranks (identical values stay as they are)."""
    if not dist.is_initialized() or dist.get_world_size() == 1 or not values:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    tensor /= dist.get_world_size()
    return dict(zip(values, tensor.tolist()))


def sum_over_ranks(value: float) -> float:
    return mean_over_ranks({"v": value})["v"] * (dist.get_world_size() if dist.is_initialized() else 1)


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (e.g. a time budget ran out)."""
    return sum_over_ranks(float(flag)) > 0
