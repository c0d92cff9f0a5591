"""One function per evaluation protocol (the bodies of the ``features``, ``zeroshot``,
``probe`` and ``finetune`` commands), in the spirit of CLIP_benchmark's metric modules,
and ``run_protocol``, the generic ``evaluate`` command of the protocols registered with a
``run`` function (``benchmark/protocols.py``).

Each writes predictions files (``benchmark/evaluate/predictions.py``) and, for the probe
and the fine-tune, a JSON record beside each file (same name, ``.json``):

probe (``linear_probe``)::

    {"solver": "logistic" | "mama_sgd",
     "chosen_C": float            # logistic: the C chosen on validation
     | "chosen_epoch": int,       # mama_sgd: the epoch chosen on validation
     "chosen_at_grid_edge": bool, # logistic: C is the grid's smallest or largest (a warning is printed)
     "train_images": int, "train_patients": int,   # the (fraction, draw) subset
     "val_images": int, "val_patients": int,       # its validation subset (split.validation)
     "sweep": [{"C" | "epoch": ..., "val_auc": float, "val_bacc": float}, ...]}

fine-tune::

    {"train_images": int, "val_images": int, "steps_run": int, "best_step": int,
     "history": [{"step": int, "val_auc": float, "val_bacc": float, ...}, ...]}
"""

from __future__ import annotations

import copy
import importlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.split import fraction_draws, read_split, split_records
from benchmark.data.tables import read_manifest
from benchmark.errors import BenchmarkError
from benchmark.evaluate.inputs import label_cells, load_features, read_features, task_records
from benchmark.evaluate.predictions import write_predictions
from benchmark.prompts import load_prompts
from benchmark.protocols import PROTOCOLS

ZEROSHOT_PROTOCOLS = ("zeroshot", "zeroshot_prefixed")


# torch is imported inside the functions that load a model: the probe and feature-only
# protocols never need it, and importing it costs a second or two in each of their jobs.


def load_model(checkpoint: Path, threads: int):
    import torch

    from benchmark.checkpoint import load_checkpoint
    from benchmark.evaluate.device import evaluation_device
    from benchmark.precision import prefer_fast_cpu_kernels

    torch.set_num_threads(threads)
    device = evaluation_device()
    model = load_checkpoint(Path(checkpoint)).to(device)
    prefer_fast_cpu_kernels(model, device, "fp32")  # features and zero-shot scores are computed in fp32
    return model


def run_features(config: dict, model, model_name: str, seed: int, manifest: Path, split: Path, out: Path,
                 zeroshot: list[tuple[str, str, str]], alignment_out: Path | None) -> None:
    """Backbone features and joint embeddings of every split; then, with the model still
    loaded, the zero-shot predictions asked for and the alignment maps."""
    from benchmark.evaluate.alignment import alignment_maps
    from benchmark.evaluate.encode import encode_images

    for protocol, _, _ in zeroshot:
        if protocol not in ZEROSHOT_PROTOCOLS:
            raise BenchmarkError(f"features: --zeroshot {protocol}: protocol must be one of {ZEROSHOT_PROTOCOLS}")
    records = split_records(read_manifest(manifest), read_split(split), ("train", "val", "test"))
    features, embeddings = encode_images(model, Path(manifest).parent, records["png"].tolist())
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, image_id=records["image_id"].to_numpy(str), features=features.astype(np.float32),
             embeddings=embeddings.astype(np.float32))
    print(f"features: {features.shape}, embeddings {embeddings.shape} -> {out}")
    for protocol, task, zeroshot_out in zeroshot:
        run_zeroshot(config, model, model_name, seed, task, manifest, split, out, zeroshot_out, protocol)
    if alignment_out:
        try:
            maps = alignment_maps(model, records, Path(manifest).parent, config["figures"]["alignment_examples"], seed)
        except ValueError as exc:
            raise BenchmarkError(f"features {model_name}: alignment maps: {exc}") from None
        np.savez(alignment_out, **maps)
        shown = len(maps["images"]) if maps["supported"] else "none: the model has no sentence_patch_similarity"
        print(f"alignment maps ({shown}) -> {alignment_out}")


def run_zeroshot(config: dict, model, model_name: str, seed: int, task_key: str, manifest: Path, split: Path,
                 features: Path, out: Path, protocol: str = "zeroshot") -> None:
    """Zero-shot predictions on validation (thresholds for sens/spec) and test."""
    from benchmark.evaluate.zeroshot import prefixed_zeroshot_scores, zeroshot_scores

    task, records = task_records(manifest, split, ("val", "test"), task_key)
    _, embeddings = load_features(features, records)
    prompts = load_prompts(Path(config["zeroshot"]["prompts"]), task)
    if protocol == "zeroshot_prefixed":
        scores = prefixed_zeroshot_scores(model, embeddings, prompts, records)
    else:
        scores = zeroshot_scores(model, embeddings, prompts)
    write_predictions(Path(out), records, scores, task=task, protocol=protocol, fraction=None,
                      model=model_name, seed=seed)
    print(f"{protocol} {model_name} {task.key}: {len(records)} validation and test images -> {out}")


def run_probe(config: dict, model_name: str, seed: int, task_key: str, manifest: Path, split: Path,
              features: Path, fractions: list[float], outs: list[str], fixed_c_outs: list[str] = ()) -> None:
    """A linear probe per (fraction, draw) on frozen features; C (or the epoch) chosen on
    validation. With ``fixed_c_outs`` (one per cell) each cell is also fitted at
    ``linear_probe.fixed_C`` without any validation choice (protocol ``linear_probe_fixed_c``)."""
    from benchmark.evaluate.probe import (
        chosen_fit,
        fit_probe,
        fit_probe_grid,
        fit_sgd_probe,
        grid_edge_warning,
        predict_probe,
        predict_sgd_probe,
        sweep_table,
    )

    task, records = task_records(manifest, split, ("train", "val", "test"), task_key)
    cells = label_cells(config, records, split, fractions)
    if len(cells) != len(outs) or (fixed_c_outs and len(fixed_c_outs) != len(cells)):
        raise BenchmarkError(f"probe: give one --out (and one --fixed-c-out) per (fraction, draw): {len(cells)} for "
                             f"{fractions} with split.draws {config['split']['draws']}")
    if fixed_c_outs and not config["linear_probe"].get("fixed_C"):
        raise BenchmarkError("probe: --fixed-c-out given, but linear_probe.fixed_C is not set")
    test = records[records["split"] == "test"]
    features = read_features(features)  # one read; each cell selects its rows
    x_test = load_features(features, test)[0]
    probe_cfg = config["linear_probe"]
    for k, (cell, out) in enumerate(zip(cells, outs)):
        fraction, draw, train, val = cell.fraction, cell.draw, cell.train, cell.val
        x_train, y_train, y_val = load_features(features, train)[0], train["label"].to_numpy(), val["label"].to_numpy()
        x_val = load_features(features, val)[0]
        fits = []  # the logistic probe's fit of every C in the grid
        try:
            if probe_cfg["solver"] == "mama_sgd":
                scaler, clf, chosen, sweep = fit_sgd_probe(x_train, y_train, x_val, y_val, task.n_classes,
                                                           probe_cfg["epochs"], probe_cfg["batch_size"], seed)
                predict = predict_sgd_probe
            else:
                scaler, fits = fit_probe_grid(x_train, y_train, x_val, y_val, task.n_classes, probe_cfg["C"],
                                              probe_cfg["max_iter"], seed)
                best = chosen_fit(fits)
                clf, chosen, sweep, predict = best["clf"], best["C"], sweep_table(fits), predict_probe
            if fixed_c_outs:  # the sensitivity row: one C, no validation choice
                # a C of the grid was fitted above, from scratch on the same data: the same model
                fixed = next((fit for fit in fits if fit["C"] == probe_cfg["fixed_C"]), None)
                fixed_scaler, fixed_clf = (scaler, fixed["clf"]) if fixed else fit_probe(
                    x_train, y_train, x_val, y_val, task.n_classes, [probe_cfg["fixed_C"]], probe_cfg["max_iter"],
                    seed)[:2]
        except ValueError as exc:
            raise BenchmarkError(f"probe {model_name} {task.key} fraction {fraction} draw {draw}: {exc}") from None
        if fixed_c_outs:
            write_predictions(Path(fixed_c_outs[k]), pd.concat([val, test]),
                              predict_probe(fixed_scaler, fixed_clf, np.concatenate([x_val, x_test]), task.n_classes),
                              task=task, protocol="linear_probe_fixed_c", fraction=fraction, model=model_name,
                              seed=seed, draw=draw)
        scores = predict(scaler, clf, np.concatenate([x_val, x_test]), task.n_classes)
        write_predictions(Path(out), pd.concat([val, test]), scores, task=task, protocol="linear_probe",
                          fraction=fraction, model=model_name, seed=seed, draw=draw)
        choice = "chosen_epoch" if probe_cfg["solver"] == "mama_sgd" else "chosen_C"
        edge = grid_edge_warning(chosen, probe_cfg["C"]) if choice == "chosen_C" else None
        if edge:
            print(f"warning: probe {model_name} {task.key} fraction {fraction:g} draw {draw}: {edge}", file=sys.stderr)
        Path(out).with_suffix(".json").write_text(json.dumps(
            {"solver": probe_cfg["solver"], choice: chosen, "chosen_at_grid_edge": edge is not None,
             "train_images": len(train), "train_patients": train["patient_id"].nunique(),
             "val_images": len(val), "val_patients": val["patient_id"].nunique(), "sweep": sweep},
            indent=2) + "\n")
        print(f"probe {model_name} {task.key} @ {fraction:g} draw {draw}: {len(train)} training images, "
              f"{choice} {chosen}")


def run_finetune(config: dict, checkpoint: Path, model_name: str, seed: int, task_key: str, manifest: Path,
                 split: Path, fractions: list[float], outs: list[str], threads: int) -> None:
    """Encoder + linear head per (label fraction, draw): the probe's draws, best validation state."""
    import torch

    from benchmark.checkpoint import load_checkpoint
    from benchmark.data.images import StreamedImages, open_images, select_images
    from benchmark.evaluate.device import evaluation_device
    from benchmark.evaluate.finetune import finetune, predict

    task, records = task_records(manifest, split, ("train", "val", "test"), task_key)
    cells = label_cells(config, records, split, fractions)
    if len(cells) != len(outs):
        raise BenchmarkError(f"finetune: give one --out per (fraction, draw): {len(cells)} for {fractions} with "
                             f"split.draws {config['split']['draws']}")
    torch.set_num_threads(threads)
    cfg = config["finetune"]
    cache = Path(manifest).parent
    test = records[records["split"] == "test"]
    pretrained = load_checkpoint(Path(checkpoint)).to(evaluation_device())  # copied afresh for every cell
    # Every image of the job is read once (the cells' training and validation sets overlap)
    # when they fit in half of images.memory_gib, the other half holding a cell's copies of
    # its subsets; otherwise each set is held in memory if it fits a third, else streamed.
    size, memory_gib = pretrained.image_size, config["images"]["memory_gib"]
    pngs = records["png"].drop_duplicates().tolist()
    every_u8 = open_images(cache, pngs, size, memory_gib / 2)
    if isinstance(every_u8, StreamedImages):

        def images(frame: pd.DataFrame):
            return open_images(cache, frame["png"].tolist(), size, memory_gib / 3)
    else:
        position = {png: i for i, png in enumerate(pngs)}

        def images(frame: pd.DataFrame):
            return select_images(every_u8, [position[png] for png in frame["png"]])

    test_u8 = images(test)  # the same test images for every cell
    for cell, out in zip(cells, outs):
        fraction, draw, train, val = cell.fraction, cell.draw, cell.train, cell.val
        evaluated = pd.concat([val, test])
        try:
            result = finetune(
                copy.deepcopy(pretrained), images(train), train["label"].to_numpy(), images(val),
                val["label"].to_numpy(), task.n_classes,
                steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                eval_every=cfg["eval_every"], patience=cfg["patience"], seed=seed, precision=cfg["precision"])
        except ValueError as exc:
            raise BenchmarkError(f"finetune {model_name} {task.key} fraction {fraction} draw {draw}: {exc}") from None
        scores = np.concatenate([result.val_scores, predict(result.classifier, test_u8, precision=result.precision)])
        write_predictions(Path(out), evaluated, scores, task=task, protocol="finetune", fraction=fraction,
                          model=model_name, seed=seed, draw=draw)
        Path(out).with_suffix(".json").write_text(json.dumps(
            {"train_images": len(train), "val_images": len(val), "steps_run": result.history[-1]["step"],
             "best_step": result.best_step, "precision": result.precision, "history": result.history}, indent=2) + "\n")
        print(f"finetune {model_name} {task.key} @ {fraction:g} draw {draw}: {len(train)} images, "
              f"best step {result.best_step}")


@dataclass(frozen=True)
class ProtocolJob:
    """What the generic ``evaluate`` command hands a registered protocol's ``run``."""

    model: str  # the config's model entry
    seed: int  # pretraining seed
    task: str  # "dataset/task"
    source: Path  # the dataset's features file, or the checkpoint folder (the protocol's ``reads``)
    manifest: Path
    split: Path
    fractions: list[float]  # label fractions (fraction protocols; empty otherwise)
    outs: list[str]  # one predictions file per (fraction, draw), fraction-major; one for the others
    threads: int  # CPU threads the protocol may use (a protocol that loads a model sets torch's)


def run_protocol(config: dict, name: str, job: ProtocolJob) -> None:
    """The ``evaluate --protocol NAME`` command: check the outputs match the cells, then
    call the protocol's registered ``run``."""
    protocol = PROTOCOLS.get(name)
    if protocol is None or protocol.run is None:
        generic = sorted(p.name for p in PROTOCOLS.values() if p.run)
        raise BenchmarkError(f"evaluate: --protocol {name}: not a protocol of the evaluate command "
                             f"(these are: {', '.join(generic) or 'none'})")
    if not config.get(name, {}).get("enabled", False):
        raise BenchmarkError(f"evaluate: --protocol {name}: the config's {name}.enabled is not true")
    cells = sum(len(fraction_draws(f, config["split"]["draws"])) for f in job.fractions) if protocol.fraction else 1
    if len(job.outs) != cells:
        raise BenchmarkError(f"evaluate {name}: give one --out per (fraction, draw): {cells} for {job.fractions} "
                             f"with split.draws {config['split']['draws']}, got {len(job.outs)}")
    module, function = protocol.run.split(":")
    getattr(importlib.import_module(module), function)(config, job)
