"""One trainer for every method: the preset's optimizer, linear warm-up then cosine, one budget.

Each method's preset names its global batch size, learning rate, weight decay and warm-up;
the budget (samples seen, or device hours) is the same for every method in a run. The run
writes a checkpoint, ``ledger.json`` (what the run spent) and ``metrics.csv`` (each step's
loss terms), and a resumable state every ``checkpoint_every`` steps. Under torchrun it is
data parallel (DDP; nccl on GPU, gloo on CPU) with negatives gathered across ranks.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import resource
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from benchmark.checkpoint import save_checkpoint
from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.exams import exam_members, paired_view_members
from benchmark.data.images import (
    HALF,
    StreamedImages,
    load_images,
    model_normalise,
    normalise_float,
    open_images,
)
from benchmark.data.label_report import label_report
from benchmark.data.labels import label_vector, sentence_label_vector
from benchmark.distributed import (
    Ranks,
    any_rank,
    close_distributed,
    init_distributed,
    mean_over_ranks,
    sum_over_ranks,
)
from benchmark.errors import BenchmarkError, Preempted
from benchmark.norm_statistics import estimate_batch_norm_statistics
from benchmark.precision import (
    DEFAULT_PRECISION,
    fused_where_supported,
    precision_context,
    prefer_fast_cpu_kernels,
    resolve_precision,
)
from benchmark.presets import TrainSettings
from benchmark.registry import build_model
from benchmark.resume import StopSignals, clear_state, load_state, restore_rng, save_state
from models.base import split_weights
from models.gather import Gather, set_gather

# What a model may ask of a batch (its ``batch_needs``); the pipeline supplies exactly these.
BATCH_FIELDS = {
    "image": "augmented view of the image",
    "caption": "the structured report, metadata masked",
    "random_sentence": "one sentence of the masked report, drawn at random",
    "view2": "another image of the same exam (p 0.5) or a second augmentation of the same image",
    "paired_view": "the other standard view (CC <-> MLO) of the same breast, else a second augmentation",
    # GLAM's fixed view order: the drawn image is one of the two, its partner view the other
    "cc_view": "the CC view of the drawn image's breast (the image itself when it is not an MLO view)",
    "mlo_view": "the MLO view of the drawn image's breast (the image itself when it is one), aligned to the CC "
                "orientation (the align-mlo step)",
    "label_report": "the mass and calcification labels as a templated report (benchmark/data/label_report.py)",
    "label_vector": "density, BI-RADS, mass and calcification labels from the tables",
    "sentence_label_vector": "the same labels as the random sentence states them (rule-based labeller)",
}
IMAGE_FIELDS = ("image", "view2", "paired_view", "cc_view", "mlo_view")


class AlignedViews:
    """Substitute images for some training rows (GLAM's MLO views aligned to the CC
    orientation): ``images[k]`` replaces row ``rows[k]``."""

    def __init__(self, rows: list[int], images):
        self.index = {row: k for k, row in enumerate(rows)}
        self.images = images

    def __contains__(self, row: int) -> bool:
        return row in self.index

    def __getitem__(self, row: int):
        return self.images[self.index[row]]


class PretrainDataset(Dataset):
    """Training-split images and what the model declared it needs. Items are addressed by
    (epoch, index) and every draw is seeded by (seed, epoch, index), so a batch depends on
    neither the number of loader workers nor where a resumed run picked up."""

    def __init__(self, records: pd.DataFrame, images_u8: torch.Tensor | StreamedImages, augment, mask_prob: float,
                 seed: int,
                 needs: tuple[str, ...] = ("image", "caption"), text_order: np.ndarray | None = None,
                 aligned: AlignedViews | None = None, text_augment=None):
        """``text_order``: image i takes its texts (caption, sentences, label report) from
        record ``text_order[i]`` (the text-shuffled control); None: its own. ``aligned``:
        images that replace some rows' own wherever they are drawn (GLAM's aligned MLO views).
        ``text_augment``: the model's caption augmentation (``TextAugment``), or None."""
        unknown = set(needs) - set(BATCH_FIELDS)
        if unknown:
            raise BenchmarkError(f"batch_needs: unknown field(s) {sorted(unknown)} (known: {sorted(BATCH_FIELDS)})")
        self.records = records.to_dict("records")
        self.images_u8 = images_u8
        self.augment = augment
        self.mask_prob = mask_prob
        self.seed = seed
        self.needs = set(needs)
        self.exams = exam_members(records)
        pairs_needed = self.needs & {"paired_view", "cc_view", "mlo_view"}
        self.paired_views = paired_view_members(records) if pairs_needed else None
        self.text_order = text_order
        self.aligned = aligned
        self.text_augment = text_augment

    def __len__(self) -> int:
        return len(self.records)

    def _pixels(self, row: int):
        return self.aligned[row] if self.aligned is not None and row in self.aligned else self.images_u8[row]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        seed_seq = np.random.SeedSequence([self.seed, epoch, i])
        gen = torch.Generator().manual_seed(int(seed_seq.generate_state(1)[0]))
        rng = np.random.default_rng(seed_seq)
        rec = self.records[i]
        text_rec = rec if self.text_order is None else self.records[int(self.text_order[i])]
        sentences = embed_sentences(text_rec, rng, self.mask_prob)
        item = {"image": self.augment(self._pixels(i), gen)}
        if "caption" in self.needs:
            item["caption"] = join_sentences(sentences)
            if self.text_augment is not None:
                item["caption"] = self.text_augment(item["caption"], rng)
        if self.needs & {"random_sentence", "sentence_label_vector"}:
            sentence = sentences[int(rng.integers(len(sentences)))]
            if "random_sentence" in self.needs:
                item["random_sentence"] = sentence
            if "sentence_label_vector" in self.needs:
                item["sentence_label_vector"] = torch.from_numpy(sentence_label_vector(sentence))
        if "view2" in self.needs:
            others = [j for j in self.exams[rec["exam_id"]] if j != i]
            j = int(rng.choice(others)) if others and rng.random() < 0.5 else i
            item["view2"] = self.augment(self.images_u8[j], gen)
        if "label_vector" in self.needs:
            item["label_vector"] = torch.from_numpy(label_vector(rec))
        if "paired_view" in self.needs:
            pairs = self.paired_views[i]
            item["paired_view"] = self.augment(self.images_u8[int(rng.choice(pairs)) if pairs else i], gen)
        if self.needs & {"cc_view", "mlo_view"}:
            pairs = self.paired_views[i]
            partner = self.augment(self._pixels(int(rng.choice(pairs)) if pairs else i), gen)
            drawn_is_mlo = rec["view"] == "MLO"
            item["cc_view"] = partner if drawn_is_mlo else item["image"]
            item["mlo_view"] = item["image"] if drawn_is_mlo else partner
        if "label_report" in self.needs:
            item["label_report"] = label_report(text_rec, rng)
        if "image" not in self.needs:  # e.g. GLAM's pair holds it as one of its views
            del item["image"]
        return item


def collate(items: list[dict], mean: tuple = HALF, std: tuple = HALF) -> dict:
    """Stack a batch; images normalised with the model's statistics (``model_collate``)."""
    batch = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if key in IMAGE_FIELDS:
            batch[key] = normalise_float(torch.stack(values), mean, std)
        elif isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch


def model_collate(model: nn.Module):
    """``collate`` with ``model``'s image statistics (a picklable callable for loader workers)."""
    return partial(collate, mean=getattr(model, "image_mean", HALF), std=getattr(model, "image_std", HALF))


def parameter_groups(model: nn.Module, weight_decay: float, no_weight_decay) -> list[dict]:
    """The trainable parameters split by the preset's ``no_weight_decay`` rule: ``"1d"``
    (open_clip: no decay on gains, biases and scales, every parameter of fewer than two
    dimensions), ``"none"`` (decay on everything, as the official MaMA and MGCA code pass
    ``self.parameters()`` to AdamW) or a list of name fragments (MedCLIP's trainer:
    ``bias``, ``LayerNorm.weight``, ``LayerNorm.bias``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if no_weight_decay == "1d":
        exempt = {n for n, p in named if p.ndim < 2}
    elif no_weight_decay == "none":
        exempt = set()
    elif isinstance(no_weight_decay, (list, tuple)):
        exempt = {n for n, _ in named if any(fragment in n for fragment in no_weight_decay)}
    else:
        raise BenchmarkError(f"pretrain: no_weight_decay {no_weight_decay!r} is not '1d', 'none' or a list of names")
    return [{"params": [p for n, p in named if n not in exempt], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0}]


def _cosine(base_lr: float, progress: float, warmup_fraction: float) -> float:
    """Cosine from ``base_lr`` to zero over the part of the budget after the warm-up."""
    rest = (progress - warmup_fraction) / max(1e-12, 1 - warmup_fraction)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, rest))))


def lr_for_steps(step: int, total_steps: int, warmup_steps: int, base_lr: float) -> float:
    """A samples budget: linear warm-up over exactly ``warmup_steps`` steps, then cosine."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return _cosine(base_lr, step / total_steps, warmup_steps / total_steps)


def lr_for_time(progress: float, warmup_fraction: float, base_lr: float) -> float:
    """A device-time budget: ``progress`` is the share of the time spent, so the warm-up is
    a share of the time too."""
    if progress < warmup_fraction:
        return base_lr * max(progress, 1e-3) / warmup_fraction
    return _cosine(base_lr, progress, warmup_fraction)


def training_records(manifest: pd.DataFrame, split: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Training-split images that have a caption; also how many were left out for lacking one."""
    train_patients = set(split.loc[split["split"] == "train", "patient_id"])
    rows = manifest[manifest["patient_id"].isin(train_patients)]
    has_caption = rows.apply(lambda r: embed_sentences(r.to_dict()) is not None, axis=1)
    return rows[has_caption].reset_index(drop=True), int((~has_caption).sum())


@dataclass(frozen=True)
class RunOptions:
    """What the config's ``pretrain`` section says about how (not what) to train."""

    samples_seen: int | None = None
    device_hours: float | None = None
    checkpoint_every: int = 50
    grad_accum: int = 1
    gather_negatives: bool = True
    grad_checkpointing: bool = False
    precision: str = DEFAULT_PRECISION  # auto, bf16 autocast or fp32 (benchmark/precision.py)
    image_memory_gib: float = 8.0  # the config's images.memory_gib
    loader_workers: int = 4  # the config's images.loader_workers (used when images are streamed)

    @classmethod
    def from_config(cls, section: dict, pretrain: bool = True, images: dict | None = None) -> RunOptions:
        names = {f for f in cls.__dataclass_fields__}
        options = cls(**{k: v for k, v in section.items() if k in names})
        if images:  # the config's images section, schema defaults filled in
            options = replace(options, image_memory_gib=images["memory_gib"], loader_workers=images["loader_workers"])
        return options if pretrain else replace(options, samples_seen=0, device_hours=None)


def steps_per_epoch(n_records: int, global_batch: int) -> int:
    return max(1, n_records // global_batch)


def step_indices(n_records: int, global_batch: int, seed: int, step: int) -> tuple[int, np.ndarray]:
    """The epoch and the record indices of optimizer step ``step``: each epoch is a seeded
    permutation cut into whole global batches (the remainder is dropped)."""
    epoch, k = divmod(step, steps_per_epoch(n_records, global_batch))
    order = np.random.default_rng([seed, epoch]).permutation(n_records)
    return epoch, order[k * global_batch:(k + 1) * global_batch]


class StepSampler:
    """Batch sampler from ``start_step`` on: this rank's contiguous share of each global
    batch, cut into ``grad_accum`` micro-batches of (epoch, index) keys."""

    def __init__(self, n_records: int, global_batch: int, seed: int, start_step: int, ranks: Ranks,
                 grad_accum: int):
        self.n, self.batch, self.seed, self.start = n_records, global_batch, seed, start_step
        self.ranks, self.accum = ranks, grad_accum
        self.per_rank = global_batch // ranks.world
        self.micro = self.per_rank // grad_accum

    def __iter__(self):
        step = self.start
        while True:
            epoch, indices = step_indices(self.n, self.batch, self.seed, step)
            share = indices[self.ranks.rank * self.per_rank:(self.ranks.rank + 1) * self.per_rank]
            for m in range(self.accum):
                yield [(epoch, int(i)) for i in share[m * self.micro:(m + 1) * self.micro]]
            step += 1


class LossModule(nn.Module):
    """The model with ``training_loss`` as its forward, so DDP sees the forward pass."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict:
        return self.model.training_loss(batch)


def global_batch_size(preset_batch: int, n_records: int, world: int, grad_accum: int) -> int:
    """The preset's global batch (capped by the data), a multiple of world x grad_accum."""
    unit = world * grad_accum
    if preset_batch % unit:
        raise BenchmarkError(f"pretrain: the preset's batch size {preset_batch} is not divisible by "
                             f"{world} processes x grad_accum {grad_accum}")
    batch = min(preset_batch, n_records) // unit * unit
    if batch == 0:
        raise BenchmarkError(f"pretrain: {n_records} training images cannot fill {unit} micro-batches")
    return batch


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _start(seed: int, threads: int, options: RunOptions) -> tuple[torch.device, Ranks]:
    """This process's device and ranks, seeded; deterministic kernels on CPU."""
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    ranks = init_distributed(device)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    if device.type == "cpu":  # bit-exact resume on CPU; cuBLAS/cuDNN kernels are not all deterministic
        torch.use_deterministic_algorithms(True)
    return device, ranks


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """The preset's optimizer (AdamW by default) over the parameter groups of its decay rule,
    with PyTorch's fused kernel where the parameters' device has one (``fused_where_supported``)."""
    groups = parameter_groups(model, settings.weight_decay, settings.no_weight_decay)
    optimizer_class = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[settings.optimizer]
    params = [p for group in groups for p in group["params"]]
    return optimizer_class(groups, lr=settings.lr, betas=settings.betas, eps=settings.eps,
                           fused=fused_where_supported(params))


def new_state(fingerprint: dict) -> dict:
    """What a run carries from step to step, and saves to resume (keys are the resume format)."""
    return {"step": 0, "seen": 0, "flops": 0, "flops_per_step": 0, "flops_terms": None, "device_seconds": 0.0,
            "history": [], "fingerprint": fingerprint}


def pretrain(*, method: str, preset: str, context: dict, manifest: pd.DataFrame, split: pd.DataFrame,
             cache_dir: Path, options: RunOptions, seed: int, out_dir: Path, threads: int,
             mask_prob: float, split_sha256: str, captions: str = "own",
             aligned_mlo: pd.DataFrame | None = None) -> dict:
    """Train one model under the run's budget; resumes from ``out_dir/resume`` if a state
    of the same run is there. Launch under torchrun for data parallelism. ``captions``:
    "own", or "shuffled": every image trained with the texts of another training image (a
    seeded permutation), the control whose zero-shot must sit at chance. ``aligned_mlo``:
    the align-mlo table (image_id, png), which a model asking for ``mlo_view`` needs."""
    device, ranks = _start(seed, threads, options)
    # the precision that runs here: the resume fingerprint and the ledger keep it
    options = replace(options, precision=resolve_precision(options.precision, device))
    model = build_model(method, preset, **context)
    if "mlo_view" in model.batch_needs and aligned_mlo is None:
        raise BenchmarkError(f"pretrain: {method} trains on MLO views aligned to the CC orientation: give "
                             "--aligned-mlo, the table `python -m benchmark align-mlo` writes")
    set_gather(model, Gather(enabled=options.gather_negatives))
    prefer_fast_cpu_kernels(model, device, options.precision)
    if options.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)
    records, no_caption = training_records(manifest, split)
    budgeted = bool(options.samples_seen) or bool(options.device_hours)
    if budgeted and len(records) == 0:
        raise BenchmarkError("pretrain: no training image has a caption")

    # The budget: samples seen (whole global batches), or device time.
    settings = TrainSettings.from_preset(model.train_settings, f"pretrain: {method}/{preset} train")
    batch_size = global_batch_size(settings.batch_size, max(len(records), ranks.world * options.grad_accum),
                                   ranks.world, options.grad_accum)
    total_steps = math.ceil(options.samples_seen / batch_size) if options.samples_seen else 0
    budget_seconds = (options.device_hours or 0) * 3600
    warmup_fraction = settings.warmup_fraction
    if total_steps:
        schedule = partial(lr_for_steps, total_steps=total_steps, warmup_steps=max(1, int(warmup_fraction * total_steps)),
                           base_lr=settings.lr)
    else:
        schedule = partial(lr_for_time, warmup_fraction=warmup_fraction, base_lr=settings.lr)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(model, settings)
    grad_clip_norm = settings.grad_clip_norm

    # Resume a state of the very same run (same fingerprint), or start over.
    fingerprint = {"method": method, "preset": preset, "seed": seed, "captions": captions,
                   "samples_seen": options.samples_seen,
                   "device_hours": options.device_hours, "batch_size": batch_size, "world": ranks.world,
                   "grad_accum": options.grad_accum, "gather_negatives": options.gather_negatives,
                   "precision": options.precision, "split_sha256": split_sha256, "train_images": len(records),
                   "context": json.dumps(context, sort_keys=True)}
    if aligned_mlo is not None:  # a state trained on other aligned images is not resumed
        fingerprint["aligned_mlo_sha256"] = hashlib.sha256(aligned_mlo.to_csv(index=False).encode()).hexdigest()
    resume_dir = Path(out_dir) / "resume"
    state = new_state(fingerprint)
    loaded = load_state(resume_dir, fingerprint) if budgeted else None
    if loaded is not None:
        model.load_state_dict(loaded.pop("weights"))
        optimizer.load_state_dict(loaded.pop("optimizer"))
        restore_rng(loaded.pop("rng"))
        state = loaded
        if ranks.main:
            print(f"resume: step {state['step']} of {total_steps or 'the time budget'} from {resume_dir}")

    def out_of_budget() -> bool:
        if total_steps:
            return state["step"] >= total_steps
        return not budgeted or any_rank(state["device_seconds"] >= budget_seconds)

    start = time.perf_counter()
    resumed_seconds = state["device_seconds"]
    streamed = False
    if budgeted and not out_of_budget():
        images = open_images(cache_dir, records["png"].tolist(), model.image_size, options.image_memory_gib)
        streamed = isinstance(images, StreamedImages)
        text_order = np.random.default_rng([seed, 11]).permutation(len(records)) if captions == "shuffled" else None
        aligned = None
        if "mlo_view" in model.batch_needs:
            png_of = dict(zip(aligned_mlo["image_id"].astype(str), aligned_mlo["png"]))
            rows = {i: png_of[str(image_id)] for i, image_id in enumerate(records["image_id"]) if str(image_id) in png_of}
            if rows:  # no MLO view among the training images: nothing to substitute
                aligned = AlignedViews(list(rows), open_images(cache_dir, list(rows.values()), model.image_size,
                                                               options.image_memory_gib))
        data = PretrainDataset(records, images, model.augment, mask_prob, seed, model.batch_needs, text_order,
                               aligned, getattr(model, "text_augment", None))  # optional (a preset's text_augment)
        sampler = StepSampler(len(records), batch_size, seed, state["step"], ranks, options.grad_accum)
        # its own generator: a loader seeds itself from the global RNG, which a resumed run restores.
        # Images in memory need no worker processes; streamed ones are decoded by workers.
        batches = iter(DataLoader(data, batch_sampler=sampler, collate_fn=model_collate(model),
                                  num_workers=options.loader_workers if streamed else 0,
                                  pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed)))
        step_module = LossModule(model)
        if ranks.world > 1:  # unused parameters: e.g. MaMA's late-loss heads before their start step
            step_module = nn.parallel.DistributedDataParallel(step_module, find_unused_parameters=True)
        autocast = precision_context(device, options.precision)
        model.train()
        bar = tqdm(total=total_steps or None, initial=state["step"], desc=f"pretrain {method}/{preset}",
                   unit="step", disable=not ranks.main)
        seen_at_start = state["seen"]
        done = False
        with StopSignals() as stop_signals:  # SIGTERM / SIGUSR1: save and exit (benchmark/resume.py)
            while not done:
                step = state["step"]
                lr = schedule(step) if total_steps else schedule(state["device_seconds"] / budget_seconds)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # FLOPs are counted on the first step, and again whenever the loss terms change
                # (e.g. MaMA's late losses switching on).
                measure = state["flops_terms"] is None or state.get("terms_changed", False)
                counter = FlopCounterMode(display=False) if measure else nullcontext()
                logged: dict[str, float] = {}
                with counter:
                    for micro in range(options.grad_accum):
                        batch = _to_device(next(batches), device)
                        batch |= {"step": step, "epoch": step // steps_per_epoch(len(records), batch_size)}
                        last = micro == options.grad_accum - 1
                        sync = nullcontext() if last or ranks.world == 1 else step_module.no_sync()
                        with sync, autocast:
                            terms = step_module(batch)
                            (terms["loss"] / options.grad_accum).backward()
                        for k, v in terms.items():
                            logged[k] = logged.get(k, 0.0) + float(v.detach()) / options.grad_accum
                if grad_clip_norm:
                    nn.utils.clip_grad_norm_(params, grad_clip_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if hasattr(model, "clamp_parameters"):  # optional contract method: e.g. a logit scale's bounds
                    model.clamp_parameters()

                # Book-keeping: FLOPs, samples, device time, the loss terms of this step.
                if measure:
                    state["flops_per_step"] = int(sum_over_ranks(counter.get_total_flops()))
                    state["flops_terms"] = sorted(terms)
                state["terms_changed"] = sorted(terms) != state["flops_terms"]
                state["flops"] += state["flops_per_step"]
                state["step"] += 1
                state["seen"] += batch_size
                state["device_seconds"] = resumed_seconds + (time.perf_counter() - start) * ranks.world
                logged = mean_over_ranks(logged)
                state["history"].append({"step": state["step"], "samples": state["seen"], **logged})
                rate = (state["seen"] - seen_at_start) / (time.perf_counter() - start)
                bar.set_postfix({k: f"{v:.3f}" for k, v in logged.items()} | {"samples/s": f"{rate:.0f}"})
                bar.update(1)
                done = out_of_budget()  # a collective under a time budget: every rank asks
                stop = not done and any_rank(stop_signals.received is not None)  # a scheduler's stop, on any rank
                if ranks.main and not done and (stop or state["step"] % options.checkpoint_every == 0):
                    save_state(resume_dir, model, optimizer, state)
                if stop:
                    bar.close()
                    close_distributed()
                    raise Preempted(stop_signals.received or "a stop signal on another rank", state["step"], resume_dir)
        bar.close()
    # An untrained control's batch norms get the pretraining images' statistics, as a trained
    # model's have them (benchmark/norm_statistics.py); no weight moves.
    norm_layers = 0 if budgeted else estimate_batch_norm_statistics(
        model, _image_batches(cache_dir, records["png"].tolist(), model, device))
    model.eval()
    ledger = build_ledger(method, preset, seed, options, state, batch_size, ranks, device, threads, model, params,
                          wall=time.perf_counter() - start, resumed=loaded is not None, train_images=len(records),
                          streamed=streamed, no_caption=no_caption, split_sha256=split_sha256, captions=captions,
                          norm_layers_estimated=norm_layers)
    if ranks.main:
        save_checkpoint(model, out_dir, method, preset, context)
        (Path(out_dir) / "ledger.json").write_text(json.dumps(ledger, indent=2) + "\n")
        pd.DataFrame(state["history"]).to_csv(Path(out_dir) / "metrics.csv", index=False)
        clear_state(resume_dir)
    close_distributed()
    return ledger


def _image_batches(cache_dir: Path, pngs: list[str], model: nn.Module, device: torch.device, batch_size: int = 64):
    """The images as the evaluation reads them (normalised, unaugmented), in batches."""
    for start in range(0, len(pngs), batch_size):
        yield model_normalise(model, load_images(cache_dir, pngs[start: start + batch_size], model.image_size)).to(device)


def build_ledger(method, preset, seed, options: RunOptions, state: dict, batch_size: int, ranks: Ranks,
                 device: torch.device, threads: int, model: nn.Module, params: list, *, wall: float, resumed: bool,
                 train_images: int, streamed: bool, no_caption: int, split_sha256: str, captions: str = "own",
                 norm_layers_estimated: int = 0) -> dict:
    """``ledger.json``: what the run spent (docs/reading-the-table.md, budget.csv)."""
    return {
        "method": method, "preset": preset, "seed": seed, "samples_seen": state["seen"],
        "samples_budget": options.samples_seen, "device_hours_budget": options.device_hours,
        "optimizer_steps": state["step"], "batch_size": batch_size, "grad_accum": options.grad_accum,
        "processes": ranks.world, "nodes": ranks.nodes, "gather_negatives": options.gather_negatives,
        "precision": options.precision,
        "wall_seconds": round(wall, 3), "resumed": resumed,
        "device": device.type, "device_name": device_name(device), "threads": threads,
        "device_seconds": round(state["device_seconds"], 3),
        "flops": int(state["flops"]),
        "flops_note": "torch.utils.flop_counter (2*m*n*k per matmul) on the first step and again whenever "
                      "the set of loss terms changes, summed over ranks, times steps",
        "params_total": sum(p.numel() for p in model.parameters()), "params_trainable": sum(p.numel() for p in params),
        "peak_memory_bytes": peak_memory_bytes(device),
        "train_images": train_images, "images_streamed": streamed,
        "loader_workers": options.loader_workers if streamed else 0, "excluded_no_caption": no_caption,
        "split_sha256": split_sha256, "captions": captions,
        "norm_layers_estimated": norm_layers_estimated,  # batch norms given the training images' statistics
        "final_loss": state["history"][-1]["loss"] if state["history"] else None,
        **final_loss_terms(model, state["history"], batch_size // options.grad_accum
                           // (1 if options.gather_negatives else ranks.world)),
    }


FINAL_STEPS = 8  # a term's final value: its mean over the last steps that logged it


def final_loss_terms(model: nn.Module, history: list[dict], candidates: int) -> dict:
    """Each logged loss term's final value (mean over its last ``FINAL_STEPS`` steps), the
    value a model that learned nothing would have (``chance_losses``, with ``candidates``
    samples per contrast) and, for a term with chance, the lowest value any model could
    reach (a logged ``<term>_floor``, e.g. soft targets' entropy; else 0), and which term
    contrasts images with their texts."""
    chance = model.chance_losses(candidates) if hasattr(model, "chance_losses") else {}
    frame = pd.DataFrame(history)

    def final(name: str) -> float | None:
        logged = frame[name].dropna()
        return round(float(logged.tail(FINAL_STEPS).mean()), 6) if len(logged) else None

    terms = {}
    for name in frame.columns.drop(["step", "samples"], errors="ignore"):
        if name.endswith("_floor"):
            continue
        terms[name] = {"final": final(name), "chance": round(chance[name], 6) if name in chance else None,
                       "floor": (final(f"{name}_floor") if f"{name}_floor" in frame else 0.0) if name in chance else None}
    return {"loss_terms": terms, "image_text_term": getattr(model, "image_text_term", None),
            "contrast_candidates": candidates}


def run_pretrain(config: dict, model_name: str, seed: int, manifest: Path, split: Path, tokenizer: str | None,
                 out_dir: Path, threads: int, text_tower: str | None = None, aligned_mlo: Path | None = None) -> None:
    """The ``pretrain`` command: one config model entry, one seed; ``text_tower``: the folder
    of the pretrained tiny text tower the preset names (the text-tower step's);
    ``aligned_mlo``: the align-mlo step's table, for models that ask for ``mlo_view``."""
    from benchmark.data.split import read_split, split_hash
    from benchmark.data.tables import read_manifest

    if model_name not in config["models"]:
        raise BenchmarkError(f"config: models.{model_name}: no such model entry")
    entry = config["models"][model_name]
    context = dict(entry.get("overrides", {}))
    if tokenizer:
        context["tokenizer"] = tokenizer
    if entry.get("weights"):
        context["weights"] = entry["weights"]
    if text_tower:
        image_weights, _ = split_weights(entry.get("weights"))
        context["weights"] = {"image": image_weights, "text": text_tower}
    options = RunOptions.from_config(config["pretrain"], pretrain=entry.get("pretrain", True),
                                     images=config["images"])
    ledger = pretrain(method=entry["method"], preset=entry["preset"], context=context,
                      manifest=read_manifest(manifest), split=read_split(split), cache_dir=Path(manifest).parent,
                      options=options, seed=seed, out_dir=Path(out_dir), threads=threads,
                      mask_prob=config["pretrain"]["caption_mask_prob"], split_sha256=split_hash(split),
                      captions=entry.get("captions", "own"),
                      aligned_mlo=pd.read_csv(aligned_mlo, dtype={"image_id": str}) if aligned_mlo else None)
    if ledger["processes"] == 1 or os.environ.get("RANK", "0") == "0":
        print(f"pretrain {model_name}: {ledger['samples_seen']} samples, {ledger['optimizer_steps']} steps, "
              f"{ledger['wall_seconds']:.0f} s, final loss {ledger['final_loss']}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
