"""The capacity plan: what a config's pretraining will cost, before any job runs.

    python -m benchmark plan --config config/paper.yaml [--gpu H100] [--mfu 0.3] [--cores-per-gpu 14]

For every model the run pretrains (not the untrained controls, not imported checkpoints)
it builds the model on the meta device for its parameters, then measures a real training
step on this CPU in a fresh process (``benchmark/plan_measure.py``; no data and no weights
are read: random images, EMBED-like records, random weights of the configured shapes) and
derives, per pretraining seed:

- FLOPs per sample: the ledger's counter (``torch.utils.flop_counter``) on one step at
  batch 2, over 2; hence PFLOPs for ``pretrain.samples_seen``;
- GPU-hours on the named GPU at a stated MFU: an estimate, never measured here (no GPU is
  lent to this project). The default MFU, 0.30, is what GPT-3, Gopher and MT-NLG reached
  on their clusters (21 to 33 %, PaLM paper, Chowdhery et al. 2022, table 3): towers of
  100 M parameters with image augmentation rarely do better;
- memory per GPU at the preset's batch per GPU (global batch / (gpus x nodes x
  grad_accum)), without and with gradient checkpointing: the fp32 weights, gradients and
  Adam's two moments of the full model, plus the forward pass's resident growth (autocast's
  weight copies and kept activations) measured at batches 2 and 3 and extrapolated
  linearly; the fit is checked against the measured growth at batch 4 and printed. The
  sum is an upper bound of the step's peak (gradients fill while activations are freed;
  plan.csv has the measured step peak at batch 4 beside it); CUDA's context and kernels'
  workspaces (about 0.5 to 1 GiB) are not in it;
- loader samples/s on one CPU core: the pretraining data path (PNG decode at
  ``preprocess.long_side``, resize to the model input, the model's augmentations, every
  view it needs), hence the loader cores one GPU needs at the planned MFU;
- disk for the image cache at ``preprocess.long_side`` (the disk check's estimate);
- for CPU configs (``pretrain.gpus: 0``): this machine's predicted hours (step time at
  batches 2 and 4, extrapolated to the preset's batch) to compare with a run's ledger.

A text tower of more than ``LM_TOWER_PARAMS`` parameters (MaMA's BioMedLM: 2.7 B) does
not fit one CPU step here: the model is measured with that tower at 1 and ``LM_DEPTH`` (8)
layers of its full width (each method says how, ``text_layer_overrides`` in models/) and every measured
quantity is extrapolated linearly to the full depth; the row says so. Measurements are
kept in ``<results>/logs/plan-measurements.json`` by what they depend on, so a second plan
measures nothing again. The plan prints a table, writes ``<results>/plan.csv`` and warns
where a preset will not fit a GPU's memory or keep it fed with the given cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from benchmark.config import model_seeds
from benchmark.errors import BenchmarkError

GIB = 2**30
LM_TOWER_PARAMS = 300e6  # larger text towers are measured at 1 and LM_DEPTH layers (BERT-base, 110 M, is whole)
# The second depth: far enough from 1 that a layer's few MiB of activations per sample stand
# out of the resident-memory noise between two processes (about 0.1 GiB), since the
# difference is multiplied by (full - 1) / (LM_DEPTH - 1); BioMedLM's 8 layers take 2.5 GiB.
LM_DEPTH = 8
DEFAULT_MFU = 0.30  # module docstring: the source
DEFAULT_CORES_PER_GPU = 14  # a DGX H100: 112 cores for 8 GPUs
# Hugging Face config keys that shape a text tower: read from a weights folder's config.json
SHAPE_KEYS = ("n_embd", "n_layer", "n_head", "n_inner", "n_positions", "hidden_size", "num_hidden_layers",
              "num_attention_heads", "intermediate_size", "max_position_embeddings")


@dataclass(frozen=True)
class GPU:
    name: str  # as the vendors' data sheets name the part
    peak_tflops: float  # dense bf16 tensor-core peak, no sparsity
    memory_gib: float  # what nvidia-smi reports as total


GPUS = {"H100": GPU("H100 SXM 80GB", 989.4, 79.6), "H200": GPU("H200 141GB", 989.4, 140.4)}


def planned_models(config: dict) -> list[str]:
    """The entries the workflow pretrains: not the untrained controls, not imported checkpoints."""
    from benchmark.external import external_models

    external = set(external_models(config["models"]))
    return [m for m, e in config["models"].items() if e.get("pretrain", True) and m not in external]


def text_shape(folder: str | None) -> dict:
    """The text tower's shape from a text weights folder's config.json, if it is there; {}
    otherwise (the preset's own shape is planned, and the row says so)."""
    config_json = Path(folder) / "config.json" if folder else None
    if config_json is None or not config_json.is_file():
        return {}
    values = json.loads(config_json.read_text())
    return {k: values[k] for k in SHAPE_KEYS if k in values}


def build_spec(entry: dict) -> tuple[dict, str]:
    """What builds the entry's architecture with random weights (method, preset, overrides
    with the weights folder's text shape), and where its text shape came from."""
    from benchmark.registry import merge_settings
    from models.base import split_weights

    _, text = split_weights(entry.get("weights"))
    overrides = dict(entry.get("overrides", {}))
    shape = text_shape(text)
    if shape:
        overrides = merge_settings(overrides, {"text": {"config": shape}})
    source = (f"{text}/config.json" if shape else f"the preset ({text} not found)" if text else "the preset")
    return {"method": entry["method"], "preset": entry["preset"], "overrides": overrides}, source


def meta_sizes(spec: dict) -> dict:
    """Parameters (total, trainable, in the text tower) and weight bytes, built on the meta device."""
    from benchmark.registry import build_on_meta

    model = build_on_meta(spec["method"], spec["preset"], **spec["overrides"])
    params = dict(model.named_parameters())
    return {"total": sum(p.numel() for p in params.values()),
            "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
            "text": sum(p.numel() for n, p in params.items() if n.startswith("text.")),
            "weight_bytes": sum(p.numel() * p.element_size() for p in params.values()),
            "batch_size": int(model.train_settings["batch_size"])}


class MeasureKilled(BenchmarkError):
    """A measurement that this machine cannot run (its process was killed)."""


def run_measure(spec: dict) -> dict:
    """``plan_measure`` in a fresh process (its own peak memory); one line on failure."""
    from benchmark.plan_measure import meminfo

    done = subprocess.run([sys.executable, "-m", "benchmark.plan_measure", json.dumps(spec)],
                          capture_output=True, text=True)
    if done.returncode < 0:  # a signal: on Linux most often the kernel's out-of-memory killer (SIGKILL)
        raise MeasureKilled(f"its measuring process was killed by signal {-done.returncode} (the kernel's "
                            f"out-of-memory killer, when a training step at batch 2 does not fit this machine's "
                            f"{meminfo('MemTotal') / GIB:.0f} GiB)")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchmarkError(f"plan: measuring {spec['method']}/{spec['preset']} failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cached_measure(spec: dict, cache: Path, measure=run_measure) -> dict:
    """``measure(spec)``, kept in ``cache`` by the spec, the torch version, the procedure and
    the precision the trainer runs in on this CPU."""
    import torch

    from benchmark.plan_measure import PROCEDURE
    from benchmark.precision import DEFAULT_PRECISION, resolve_precision

    precision = resolve_precision(DEFAULT_PRECISION, torch.device("cpu"))
    key = hashlib.sha256(json.dumps([spec, torch.__version__, PROCEDURE, precision], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in known:
        known[key] = measure(spec)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1, sort_keys=True))
    return known[key]


def in_depth(low: float, high: float, low_layers: int, high_layers: int, layers: int) -> float:
    """A quantity measured at ``low_layers`` and ``high_layers`` text layers, extrapolated
    linearly to ``layers``."""
    return low + (layers - low_layers) * (high - low) / (high_layers - low_layers)


def measured_quantities(m: dict) -> dict:
    """The figures the plan uses from one measurement (plan_measure's output); NaN where a
    step was skipped for this machine's memory (``skipped`` says which)."""
    nan = float("nan")
    seconds = {int(b): t for b, t in m["step_seconds"].items()}
    low, high = min(seconds), max(seconds)
    fwd, ckpt, peak = ({int(b): v for b, v in m[key].items()}
                       for key in ("forward_bytes", "forward_bytes_checkpointed", "step_bytes"))
    fitted = 2 in fwd and 3 in fwd
    return {"flops_per_sample": m["flops_per_step"] / m["flops_batch"],
            "seconds_at_2": seconds[2],
            "seconds_per_sample": (seconds[high] - seconds[low]) / (high - low) if high > low else seconds[2] / 2,
            "forward_at_2": fwd[2] if fitted else nan, "forward_per_sample": fwd[3] - fwd[2] if fitted else nan,
            "forward_ckpt_at_2": ckpt[2] if fitted else nan,
            "forward_ckpt_per_sample": ckpt[3] - ckpt[2] if fitted else nan,
            "forward_at_4": fwd.get(4, nan), "step_peak_at_4": peak.get(4, nan),
            "loader_samples_per_s": m["loader_samples_per_s"], "skipped": list(m.get("skipped", []))}


def measure_model(spec: dict, sizes: dict, settings: dict, threads: int, loader: dict, cache: Path,
                  measure=run_measure) -> tuple[dict, str, dict]:
    """The measured quantities at the full text depth (extrapolated where the tower is an
    LM, module docstring), how they were measured, and the measurement the fit is checked on."""
    from benchmark.registry import merge_settings, model_class

    base = dict(spec, threads=threads, loader=loader)
    cls = model_class(spec["method"])
    if sizes["text"] <= LM_TOWER_PARAMS or not hasattr(cls, "text_layer_overrides"):
        q = measured_quantities(cached_measure(base, cache, measure))
        return q, "whole model", q
    full = cls.text_layers(settings)
    depths = (1, min(LM_DEPTH, full))
    variants = [measured_quantities(cached_measure(
        dict(base, overrides=merge_settings(spec["overrides"], cls.text_layer_overrides(settings, k))), cache, measure))
        for k in depths]
    q = {k: in_depth(variants[0][k], variants[1][k], *depths, full) for k in variants[0] if k != "skipped"}
    q["loader_samples_per_s"] = variants[0]["loader_samples_per_s"]  # the loader has no text tower
    checked = [v for v in variants if v["forward_at_4"] == v["forward_at_4"]]  # not NaN: batch 4 was measured
    q["skipped"] = sorted({r for v in variants for r in v["skipped"]  # a check one depth made is not missing
                           if not (checked and r.startswith("the memory check at batch 4"))})
    return q, f"text tower at {depths[0]} and {depths[1]} of {full} layers, extrapolated", (checked or variants)[-1]


def cache_bytes(config: dict) -> dict[str, int]:
    """The image cache of every dataset the run reads, at ``preprocess.long_side`` (0: image count unknown yet)."""
    from benchmark.disk_space import CACHE_ASPECT, dataset_images

    pre = config["preprocess"]
    pixel = 1 if pre["bits"] <= 8 else 2
    return {name: int(dataset_images(name, config) * pre["long_side"] ** 2 * CACHE_ASPECT * pixel)
            for name in config["data"]}


def plan(config: dict, gpu: str = "H100", mfu: float = DEFAULT_MFU, cores_per_gpu: int = DEFAULT_CORES_PER_GPU,
         models: list[str] | None = None, measure=run_measure) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The plan's rows (one per pretrained model, one per dataset's cache, a total), its
    warnings (what will not fit) and notes (how to read it). ``models``: only these entries
    (default: every one the run pretrains)."""
    from benchmark.registry import merge_settings, preset_values

    if gpu not in GPUS:
        raise BenchmarkError(f"plan: --gpu {gpu!r} is not one of {', '.join(GPUS)}")
    if not 0 < mfu <= 1:
        raise BenchmarkError(f"plan: --mfu {mfu} is not in (0, 1]")
    pretrained = planned_models(config)
    unknown = [m for m in models or [] if m not in pretrained]
    if unknown:
        raise BenchmarkError(f"plan: --models {', '.join(unknown)}: not a model this config pretrains "
                             f"({', '.join(pretrained)})")
    card = GPUS[gpu]
    pre = config["pretrain"]
    on_gpu = pre.get("gpus", 0) > 0  # else the GPU columns say what one GPU would need, without warnings
    gpus_per_job = max(pre.get("gpus", 0), 1) * pre.get("nodes", 1)
    accum = pre.get("grad_accum", 1)
    # the pretraining jobs' threads, at most this machine's cores (a paper config names a GPU node's)
    threads = min(pre.get("threads", config.get("threads", 2)), len(os.sched_getaffinity(0)))
    loader = {"long_side": config["preprocess"]["long_side"], "bits": config["preprocess"]["bits"]}
    cache = Path(config["results"]) / "logs" / "plan-measurements.json"
    rows, warns, notes = [], [], []
    for name in models or pretrained:
        entry = config["models"][name]
        spec, text_source = build_spec(entry)
        sizes = meta_sizes(spec)
        settings = merge_settings(preset_values(spec["method"], spec["preset"]), spec["overrides"])
        try:
            q, how, check = measure_model(spec, sizes, settings, threads, loader, cache, measure)
        except MeasureKilled as exc:
            rows.append({"model": name, "method": spec["method"], "preset": spec["preset"],
                         "seeds": len(model_seeds(config, name)), "measured": f"not measured here: {exc}",
                         "text_shape_from": text_source,
                         "params_total_m": sizes["total"] / 1e6, "params_trainable_m": sizes["trainable"] / 1e6,
                         "samples_seen": pre["samples_seen"]})
            warns.append(f"{name}: not planned: {exc}; plan it on a machine with more memory "
                         f"(python -m benchmark plan --models {name})")
            continue
        batch = sizes["batch_size"]
        per_gpu = max(batch // (gpus_per_job * accum), 1)
        static = sizes["weight_bytes"] + 12 * sizes["trainable"]  # fp32 weights; gradients and Adam's 2 moments
        memory = static + q["forward_at_2"] + (per_gpu - 2) * q["forward_per_sample"]
        memory_ckpt = static + q["forward_ckpt_at_2"] + (per_gpu - 2) * q["forward_ckpt_per_sample"]
        fit_at_4 = check["forward_at_2"] + 2 * check["forward_per_sample"]
        samples = pre["samples_seen"]
        pflop = samples * q["flops_per_sample"] / 1e15
        gpu_hours = pflop * 1e15 / (card.peak_tflops * 1e12 * mfu) / 3600
        gpu_samples_per_s = card.peak_tflops * 1e12 * mfu / q["flops_per_sample"]
        cores = gpu_samples_per_s / q["loader_samples_per_s"]
        cpu_steps = samples / batch
        cpu_hours = cpu_steps * (q["seconds_at_2"] + (batch - 2) * q["seconds_per_sample"]) / 3600 if not on_gpu else None
        checkpointing = bool(pre.get("grad_checkpointing", False))
        planned_memory = memory_ckpt if checkpointing else memory
        rows.append({
            "model": name, "method": spec["method"], "preset": spec["preset"], "seeds": len(model_seeds(config, name)),
            "measured": how, "text_shape_from": text_source,
            "params_total_m": sizes["total"] / 1e6, "params_trainable_m": sizes["trainable"] / 1e6,
            "gflop_per_sample": q["flops_per_sample"] / 1e9, "samples_seen": samples, "pflop": pflop,
            "gpu": card.name, "mfu": mfu, "gpu_hours": gpu_hours, "gpus_per_job": gpus_per_job,
            "wall_hours": gpu_hours / gpus_per_job, "batch_per_gpu": per_gpu,
            "memory_gib": memory / GIB, "memory_gib_checkpointed": memory_ckpt / GIB,
            "forward_fit_error_at_4": fit_at_4 / check["forward_at_4"] - 1,
            "step_peak_at_4_gib": check["step_peak_at_4"] / GIB,
            "loader_samples_per_s_per_core": q["loader_samples_per_s"], "loader_cores_per_gpu": cores,
            "cpu_hours_here": cpu_hours, "cpu_threads": threads,
            "skipped_here": "; ".join(q["skipped"])})
        notes += [f"{name}: not measured here: {reason}" for reason in q["skipped"]]
        if not on_gpu:
            continue
        if planned_memory > card.memory_gib * GIB:
            warns.append(f"{name}: about {planned_memory / GIB:.1f} GiB per GPU at batch {per_gpu} "
                         f"({'with' if checkpointing else 'without'} gradient checkpointing) does not fit the "
                         f"{card.name}'s {card.memory_gib} GiB: raise pretrain.gpus, nodes or grad_accum"
                         + ("" if checkpointing else ", or set pretrain.grad_checkpointing"))
        if cores > cores_per_gpu:
            warns.append(f"{name}: the loader needs about {cores:.1f} cores per GPU at MFU {mfu:g} "
                         f"({q['loader_samples_per_s']:.1f} samples/s per core), more than the {cores_per_gpu} given "
                         "(--cores-per-gpu): the GPU will wait for data; lower preprocess.long_side or plan more cores")
    for dataset, size in cache_bytes(config).items():
        rows.append({"model": f"cache/{dataset}", "measured": "disk check estimate" if size else
                     "unknown: no table or synthetic section yet", "cache_gib": size / GIB if size else None})
    table = pd.DataFrame(rows)
    seeds = len(config["seeds"])  # the run's; a model with seeds of its own counts them (its row's seeds)
    total = {"model": f"total ({seeds} seeds)", "measured": "sum over the measured models x their seeds",
             **{col: table[col].mul(table["seeds"]).sum(min_count=1) for col in ("pflop", "gpu_hours", "cpu_hours_here")},
             "cache_gib": table["cache_gib"].sum(min_count=1)}
    if not on_gpu:
        notes.append("pretrain.gpus is 0: this config trains on CPUs (CPU-h here); the GPU columns are what one "
                     "GPU would need, not checked against its memory or cores")
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True), warns, notes


def format_plan(table: pd.DataFrame, warns: list[str], notes: list[str]) -> str:
    """The printed table: the columns a booking needs; plan.csv has every column."""
    columns = {"model": "model", "seeds": "seeds", "params_total_m": "params M", "params_trainable_m": "trainable M",
               "gflop_per_sample": "GFLOP/sample", "pflop": "PFLOP", "gpu_hours": "GPU-h",
               "batch_per_gpu": "batch/GPU", "memory_gib": "GiB/GPU", "memory_gib_checkpointed": "GiB/GPU ckpt",
               "forward_fit_error_at_4": "fit err @4", "loader_cores_per_gpu": "cores/GPU",
               "cpu_hours_here": "CPU-h here", "cache_gib": "cache GiB"}
    shown = table[list(columns)].rename(columns=columns)
    lines = [shown.to_string(index=False, na_rep="", float_format=lambda v: f"{v:,.3g}")]
    gpu_rows = table.dropna(subset=["gpu"])
    if len(gpu_rows):
        r = gpu_rows.iloc[0]
        lines.append(f"GPU-hours: estimates on the {r['gpu']} at MFU {r['mfu']:g} (not measured: no GPU here); "
                     "memory: fp32 weights, gradients, Adam moments + the forward's growth measured on this CPU at "
                     "batches 2 and 3, extrapolated (fit err @4: against the measured batch 4)")
    for _, r in table.dropna(subset=["text_shape_from"]).iterrows():
        if r["measured"] != "whole model" or "not found" in r["text_shape_from"]:
            lines.append(f"{r['model']}: {r['measured']}; text shape from {r['text_shape_from']}")
    lines += [f"note: {n}" for n in notes] + [f"warning: {w}" for w in warns]
    return "\n".join(lines)


def run_plan(config: dict, gpu: str, models: list[str] | None, out: Path | None, mfu: float = DEFAULT_MFU,
             cores_per_gpu: int = DEFAULT_CORES_PER_GPU) -> None:
    table, warns, notes = plan(config, gpu, mfu, cores_per_gpu, models)
    out = out or Path(config["results"]) / "plan.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(format_plan(table, warns, notes))
    print(f"plan: {out}")
