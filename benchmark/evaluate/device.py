"""Where evaluation runs: the first GPU when there is one (features, zero-shot, alignment
maps and fine-tuning of paper-size models), else the CPU. Results come back as numpy on
the CPU either way."""

from __future__ import annotations

import torch


def evaluation_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
