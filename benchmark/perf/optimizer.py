"""The optimizer update of each tiny preset on a CPU: PyTorch's default AdamW (one kernel
per parameter tensor, the code before) against its fused kernel (``fused_where_supported``
in ``benchmark/precision.py``, today's), measured in the same run.

    python -m benchmark.perf.optimizer [--steps 50] [--threads 1]

For each model it times one AdamW step over the parameters pretraining updates (the
preset's parameter groups) and over those the fine-tune updates (every parameter and a
4-class head), prints both ratios, what the difference comes to per default-run job
(a pretraining run of ``pretrain.samples_seen`` samples; a fine-tune job of seven cells x
``finetune.steps``, both from config/config.yaml), and the
largest difference of a parameter after ``--steps`` updates with the same gradients.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from benchmark.evaluate.finetune import Classifier
from benchmark.perf import default_budget
from benchmark.perf.precision import MODELS
from benchmark.perf.train import synthetic_tokenizer
from benchmark.presets import TrainSettings
from benchmark.registry import build_model
from benchmark.train import parameter_groups

PRETRAIN_SAMPLES, CELL_STEPS = default_budget()
FINETUNE_STEPS = 7 * CELL_STEPS  # seven (fraction, draw) cells per fine-tune job


def adamw(groups, lr: float, fused: bool | None) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.01, fused=fused)


def time_updates(module: torch.nn.Module, groups_of, lr: float, steps: int) -> tuple[dict, float]:
    """Seconds per step with and without the fused kernel, and the largest parameter
    difference between the two after ``steps`` updates with the same gradients."""
    seconds, params = {}, {}
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(p.shape, generator=generator) * 1e-3 for p in module.parameters()]
    for fused in (None, True):
        copy_ = copy.deepcopy(module)
        for p, g in zip(copy_.parameters(), grads):
            p.grad = g.clone()
        optimizer = adamw(groups_of(copy_), lr, fused)
        optimizer.step()  # warm-up (state allocation)
        start = time.perf_counter()
        for _ in range(steps):
            optimizer.step()
        seconds[fused] = (time.perf_counter() - start) / steps
        params[fused] = [p.detach().clone() for p in copy_.parameters()]
    diff = max(float((a - b).abs().max()) for a, b in zip(params[None], params[True]))
    return seconds, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps timed per setting")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"{'model':9s} {'tensors':>7s} | {'pretrain ms':>11s} {'fused ms':>8s} {'x':>5s} {'s/job':>6s} | "
          f"{'finetune ms':>11s} {'fused ms':>8s} {'x':>5s} {'s/job':>6s} | {'max |diff|':>10s}")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = synthetic_tokenizer(Path(tmp) / "tokenizer.json")
        for name in args.models:
            torch.manual_seed(0)
            model = build_model(name, "tiny", tokenizer=tokenizer)
            settings = TrainSettings.from_preset(model.train_settings, f"{name}/tiny train")
            pretrain_s, pretrain_diff = time_updates(
                model, lambda m, s=settings: parameter_groups(m, s.weight_decay, s.no_weight_decay),
                settings.lr, args.steps)
            classifier = Classifier(model, 4)
            for p in classifier.parameters():
                p.requires_grad_(True)
            finetune_s, finetune_diff = time_updates(classifier, lambda m: list(m.parameters()), 1e-4, args.steps)
            steps = -(-PRETRAIN_SAMPLES // settings.batch_size)
            print(f"{name:9s} {len(list(classifier.parameters())):7d} | "
                  f"{pretrain_s[None] * 1e3:11.2f} {pretrain_s[True] * 1e3:8.2f} "
                  f"{pretrain_s[None] / pretrain_s[True]:4.1f}x {(pretrain_s[None] - pretrain_s[True]) * steps:6.2f} | "
                  f"{finetune_s[None] * 1e3:11.2f} {finetune_s[True] * 1e3:8.2f} "
                  f"{finetune_s[None] / finetune_s[True]:4.1f}x "
                  f"{(finetune_s[None] - finetune_s[True]) * FINETUNE_STEPS:6.2f} | "
                  f"{max(pretrain_diff, finetune_diff):10.1e}")


if __name__ == "__main__":
    main()
