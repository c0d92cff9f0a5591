"""Run under ``torchrun --nproc_per_node 2``: one global batch, split over the ranks, through
DDP with gathered negatives; rank 0 compares loss and gradients with one process on the
whole batch and writes the differences to ``--out`` (JSON). Used by tests/test_trainer.py."""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.images import Augment, image_hw
from benchmark.data.label_report import label_report
from benchmark.data.labels import sentence_label_vector
from benchmark.distributed import init_distributed, mean_over_ranks
from benchmark.registry import build_model
from benchmark.train import LossModule, collate
from models.gather import Gather, set_gather

# tests/conftest.py's record; a copy, because torchrun runs this file as a script
REC = {"study_description": "MG Screening Bilateral", "reason": "screening", "age": "56", "race": "Asian",
       "ethnicity": "Unreported", "image_type": "2D", "laterality": "L", "view": "CC"}


def global_batch(model, n: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        rec = REC | {"density": 1 + i % 4, "birads": i % 7, "massshape": "X" if i % 3 == 0 else ""}
        sentences = embed_sentences(rec)
        image = torch.randint(0, 255, (1, *image_hw(model.image_size)), generator=gen, dtype=torch.uint8)
        item = {"image": Augment(jitter=0)(image, gen), "view2": Augment(jitter=0)(image, gen),
                "paired_view": Augment(jitter=0)(image, gen), "label_report": label_report(rec),
                "cc_view": Augment(jitter=0)(image, gen), "mlo_view": Augment(jitter=0)(image, gen),
                "caption": join_sentences(sentences[: 2 + i % 5]),  # reports of different lengths
                "random_sentence": sentences[i % len(sentences)],
                "label_vector": torch.nn.functional.one_hot(torch.tensor(i % 13), 13).float(),
                "sentence_label_vector": torch.from_numpy(sentence_label_vector(sentences[i % len(sentences)]))}
        items.append({k: v for k, v in item.items() if k in model.batch_needs})
    return collate(items) | {"step": 10_000, "epoch": 1}


def rows(batch: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] if isinstance(v, (torch.Tensor, list)) else v for k, v in batch.items()}


def loss_and_grads(module: torch.nn.Module, model: torch.nn.Module, batch: dict) -> tuple[float, dict]:
    loss = module(batch)["loss"]
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--gather", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ranks = init_distributed(torch.device("cpu"))

    torch.manual_seed(0)
    model = build_model(args.model, "tiny", tokenizer=args.tokenizer).eval()  # eval: no dropout draws
    set_gather(model, Gather(enabled=bool(args.gather)))
    batch = global_batch(model, args.batch)
    share = args.batch // ranks.world
    ddp = torch.nn.parallel.DistributedDataParallel(LossModule(model), find_unused_parameters=True)
    loss, grads = loss_and_grads(ddp, model, rows(batch, ranks.rank * share, (ranks.rank + 1) * share))
    loss = mean_over_ranks({"loss": loss})["loss"]

    if ranks.main:
        torch.manual_seed(0)
        single = build_model(args.model, "tiny", tokenizer=args.tokenizer).eval()
        set_gather(single, Gather(enabled=False))  # one process on the whole batch
        ref_loss, ref_grads = loss_and_grads(LossModule(single), single, batch)
        missing = sorted(set(ref_grads) ^ set(grads))
        diffs = sorted((float((grads[n] - ref_grads[n]).abs().max()), n) for n in ref_grads if n in grads)
        diff = diffs[-1][0]
        scale = max(float(g.abs().max()) for g in ref_grads.values())
        with open(args.out, "w") as f:
            json.dump({"loss": loss, "ref_loss": ref_loss, "grad_max_abs_diff": diff, "grad_max_abs": scale,
                       "params_compared": len(ref_grads), "params_mismatched": missing,
                       "worst": diffs[-3:], "world": ranks.world, "pid": os.getpid()}, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
