"""One trainer for every method: AdamW, linear warm-up then cosine, a samples-seen budget.

Each method's preset names its batch size, learning rate, weight decay and warm-up;
the budget (samples seen) is the same for every method in a run. The run writes a
checkpoint and ``ledger.json`` (what the run spent).
"""

from __future__ import annotations

import json
import math
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from benchmark.checkpoint import save_checkpoint
from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.exams import exam_members
from benchmark.data.images import load_images, normalise_float
from benchmark.data.labels import label_vector
from benchmark.errors import BenchmarkError
from benchmark.registry import build_model

# What a model may ask of a batch (its ``batch_needs``); the pipeline supplies exactly these.
BATCH_FIELDS = {
    "image": "augmented view of the image",
    "caption": "the structured report, metadata masked",
    "random_sentence": "one sentence of the masked report, drawn at random",
    "view2": "another image of the same exam (p 0.5) or a second augmentation of the same image",
    "label_vector": "density, BI-RADS, mass and calcification labels from the tables",
}


class PretrainDataset(Dataset):
    """Training-split images and what the model declared it needs; every draw is seeded
    per (seed, epoch, index), so batches do not depend on the number of loader workers."""

    def __init__(self, records: pd.DataFrame, images_u8: torch.Tensor, augment, mask_prob: float, seed: int,
                 needs: tuple[str, ...] = ("image", "caption")):
        unknown = set(needs) - set(BATCH_FIELDS)
        if unknown:
            raise BenchmarkError(f"batch_needs: unknown field(s) {sorted(unknown)} (known: {sorted(BATCH_FIELDS)})")
        self.records = records.to_dict("records")
        self.images_u8 = images_u8
        self.augment = augment
        self.mask_prob = mask_prob
        self.seed = seed
        self.needs = set(needs)
        self.epoch = 0
        self.exams = exam_members(records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        seed_seq = np.random.SeedSequence([self.seed, self.epoch, i])
        gen = torch.Generator().manual_seed(int(seed_seq.generate_state(1)[0]))
        rng = np.random.default_rng(seed_seq)
        rec = self.records[i]
        sentences = embed_sentences(rec, rng, self.mask_prob)
        item = {"image": self.augment(self.images_u8[i], gen)}
        if "caption" in self.needs:
            item["caption"] = join_sentences(sentences)
        if "random_sentence" in self.needs:
            item["random_sentence"] = sentences[int(rng.integers(len(sentences)))]
        if "view2" in self.needs:
            others = [j for j in self.exams[rec["exam_id"]] if j != i]
            j = int(rng.choice(others)) if others and rng.random() < 0.5 else i
            item["view2"] = self.augment(self.images_u8[j], gen)
        if "label_vector" in self.needs:
            item["label_vector"] = torch.from_numpy(label_vector(rec))
        return item


def collate(items: list[dict]) -> dict:
    batch = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key in ("image", "view2"):
            batch[key] = normalise_float(torch.stack(values))
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def training_records(manifest: pd.DataFrame, split: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Training-split images that have a caption; also how many were left out for lacking one."""
    train_patients = set(split.loc[split["split"] == "train", "patient_id"])
    rows = manifest[manifest["patient_id"].isin(train_patients)]
    has_caption = rows.apply(lambda r: embed_sentences(r.to_dict()) is not None, axis=1)
    return rows[has_caption].reset_index(drop=True), int((~has_caption).sum())


def pretrain(*, method: str, preset: str, context: dict, manifest: pd.DataFrame, split: pd.DataFrame,
             cache_dir: Path, samples_seen: int, seed: int, out_dir: Path, threads: int,
             mask_prob: float, split_sha256: str) -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model = build_model(method, preset, **context)
    records, no_caption = training_records(manifest, split)
    if samples_seen > 0 and len(records) == 0:
        raise BenchmarkError("pretrain: no training image has a caption")
    settings = model.train_settings
    batch_size = min(settings["batch_size"], max(1, len(records)))
    total_steps = math.ceil(samples_seen / batch_size) if samples_seen > 0 else 0
    warmup = max(1, int(settings.get("warmup_fraction", 0.1) * total_steps))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[settings.get("optimizer", "adamw")]
    optimizer = optimizer_class(groups, lr=settings["lr"], betas=tuple(settings.get("betas", (0.9, 0.98))))
    start = time.perf_counter()
    seen = steps = 0
    flops_per_step = 0
    history = []
    if total_steps:
        images = load_images(cache_dir, records["png"].tolist(), model.image_size)
        data = PretrainDataset(records, images, model.augment, mask_prob, seed, model.batch_needs)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        bar = tqdm(total=total_steps, desc=f"pretrain {method}/{preset}", unit="step")
        while steps < total_steps:
            loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=len(data) >= batch_size,
                                collate_fn=collate, generator=gen, num_workers=0)
            for batch in loader:
                if steps >= total_steps:
                    break
                batch |= {"step": steps, "epoch": data.epoch}
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(steps, total_steps, settings["lr"], warmup)
                if steps == 0:
                    with FlopCounterMode(display=False) as counter:
                        terms = model.training_loss(batch)
                        terms["loss"].backward()
                    flops_per_step = counter.get_total_flops()
                else:
                    terms = model.training_loss(batch)
                    terms["loss"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                seen += len(batch["image"])
                logged = {k: float(v) for k, v in terms.items()}
                history.append({"step": steps, "samples": seen, **logged})
                bar.set_postfix({k: f"{v:.3f}" for k, v in logged.items()}
                                | {"samples/s": f"{seen / (time.perf_counter() - start):.0f}"})
                bar.update(1)
            data.epoch += 1
        bar.close()
    wall = time.perf_counter() - start
    model.eval()
    save_checkpoint(model, out_dir, method, preset, context)
    n_total = sum(p.numel() for p in model.parameters())
    ledger = {
        "method": method, "preset": preset, "seed": seed, "samples_seen": seen, "samples_budget": samples_seen,
        "optimizer_steps": steps, "batch_size": batch_size, "wall_seconds": round(wall, 3),
        "device": "cpu", "device_name": platform.processor() or platform.machine(), "threads": threads,
        "device_seconds": round(wall, 3),
        "flops": int(flops_per_step * steps),
        "flops_note": "torch.utils.flop_counter on the first step (2*m*n*k per matmul), times steps",
        "params_total": n_total, "params_trainable": sum(p.numel() for p in params),
        "peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "train_images": len(records), "excluded_no_caption": no_caption, "split_sha256": split_sha256,
        "final_loss": history[-1]["loss"] if history else None,
    }
    (Path(out_dir) / "ledger.json").write_text(json.dumps(ledger, indent=2) + "\n")
    pd.DataFrame(history).to_csv(Path(out_dir) / "metrics.csv", index=False)
    return ledger
