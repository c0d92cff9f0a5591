"""The data steps of the workflow (the bodies of the ``synth``, ``check-data``,
``preprocess``, ``split`` and ``tokenizer`` commands)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from benchmark.datasets import DATASETS
from benchmark.errors import BenchmarkError


def run_synth(dataset: str, entry: dict, out: Path, workers: int) -> None:
    """Synthetic data in the dataset's real format (``data.<dataset>.synthetic``)."""
    spec = entry.get("synthetic")
    writer = DATASETS[dataset].write_synthetic
    if spec is None or writer is None:
        raise BenchmarkError(f"config: data.{dataset}.synthetic: not set, nothing to generate")
    summary = writer(Path(out), spec["patients"], spec.get("seed", 0), (spec.get("rows", 512), spec.get("cols", 416)),
                     workers)
    print(f"synth {dataset}: {summary['images']} images of {summary['patients']} patients in {out}")


def run_check_data(dataset: str, entry: dict, root: str | None, out: str | None) -> None:
    """Print (and optionally save) what check_data finds; stop if no image is usable."""
    from benchmark.config import dataset_defaults
    from benchmark.data.check import check_data, format_report

    entry = dict(entry or {})
    if root:
        entry["root"] = root
    if "root" not in entry:
        raise BenchmarkError(f"check-data: no --root and no data.{dataset}.root in the config")
    report = check_data(dataset, dataset_defaults(dataset) | entry)
    print(format_report(report))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    if report["images_usable"] == 0:
        raise BenchmarkError(f"check-data: no usable image in {entry['root']}")


def run_preprocess(dataset: str, entry: dict, settings: dict, out_dir: Path, workers: int) -> None:
    """manifest.csv, exclusions.csv and the PNG cache; rows in = kept + excluded, or stop."""
    from benchmark.data.check import load_records
    from benchmark.data.exams import add_view_pairs
    from benchmark.data.preprocess import PreprocessSettings, preprocess
    from benchmark.data.tables import EXCLUSION_COLUMNS, MANIFEST_COLUMNS

    records, excluded, rows_in = load_records(dataset, entry)
    manifest, failed = preprocess(records, Path(entry["root"]), Path(out_dir), PreprocessSettings(**settings),
                                  workers=workers)
    exclusions = pd.concat([excluded, failed], ignore_index=True).reindex(columns=EXCLUSION_COLUMNS)
    dropped = int((exclusions["scope"] == "all").sum())
    if manifest.empty:
        reasons = exclusions[exclusions["scope"] == "all"]["reason"].value_counts()
        counts = "; ".join(f"{reason}: {n}" for reason, n in reasons.head(5).items()) or "the table has no rows"
        raise BenchmarkError(f"preprocess {dataset}: no usable image of {rows_in} rows ({counts})")
    if rows_in != len(manifest) + dropped:
        raise BenchmarkError(f"preprocess: {rows_in} rows in but {len(manifest)} kept + {dropped} excluded")
    extra = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    manifest = add_view_pairs(manifest.reindex(columns=MANIFEST_COLUMNS + extra))
    for col in ("density", "birads", "cancer"):
        manifest[col] = manifest[col].astype("Int64")
    manifest.to_csv(Path(out_dir) / "manifest.csv", index=False)
    exclusions.to_csv(Path(out_dir) / "exclusions.csv", index=False)
    print(f"preprocess {dataset}: {rows_in} rows in, {len(manifest)} images kept, {dropped} excluded "
          f"({len(exclusions) - dropped} task-level exclusions); see {out_dir}/exclusions.csv")


def run_split(dataset: str, split_cfg: dict, manifest_path: Path, out: Path, tasks: list[str]) -> None:
    """The patient-level split with its nested fractions; warnings as one line each. The
    classes in test and validation are checked for the configured ``tasks`` of the dataset
    (``dataset/task`` keys) only: a task the run does not evaluate cannot refuse its split."""
    from benchmark.config import split_ratios
    from benchmark.data.split import check_split, make_split, write_split
    from benchmark.data.tables import read_manifest

    manifest = read_manifest(manifest_path)
    if manifest.empty:
        raise BenchmarkError(f"split {dataset}: {manifest_path} has no image to split")
    stratify = split_cfg["stratify"].get(dataset) or DATASETS[dataset].tasks[0].column
    table = make_split(manifest, stratify, split_cfg["seed"], split_ratios(split_cfg, dataset), split_cfg["fractions"],
                       split_cfg["draws"], tuple(t.column for t in DATASETS[dataset].tasks),
                       split_cfg.get("balance_by", {}).get(dataset))
    checked = [t for t in DATASETS[dataset].tasks if f"{dataset}/{t.name}" in tasks]
    for line in check_split(table, manifest, checked, dataset):
        print(f"warning: {line}", file=sys.stderr)
    digest = write_split(table, Path(out))
    counts = table["split"].value_counts().to_dict()
    print(f"split {dataset}: {counts} patients; sha256 {digest[:12]}; classes checked for "
          f"{', '.join(t.name for t in checked) or 'no task (none configured)'}")


def training_texts(manifest_path: Path, split_path: Path) -> list[str]:
    """The training split's captions, with and without their metadata sentences: the corpus
    of the BPE tokenizer and of the text towers (no validation or test text)."""
    from benchmark.data.captions import embed_sentences, join_sentences
    from benchmark.data.split import read_split
    from benchmark.data.tables import read_manifest
    from benchmark.train import training_records

    records, _ = training_records(read_manifest(manifest_path), read_split(split_path))
    texts = []
    for rec in records.to_dict("records"):
        texts.append(join_sentences(embed_sentences(rec)))
        texts.append(join_sentences(embed_sentences(rec | {k: "" for k in ("age", "race", "ethnicity", "view")})))
    return texts


def run_tokenizer(vocab_size: int, manifest_path: Path, split_path: Path, out: Path) -> None:
    """A BPE tokenizer on the training captions, with and without their metadata sentences."""
    from benchmark.data.tokenizer import train_tokenizer

    texts = training_texts(manifest_path, split_path)
    tok = train_tokenizer(texts, vocab_size, Path(out))
    print(f"tokenizer: {tok.get_vocab_size()} tokens from {len(texts) // 2} training captions -> {out}")


def run_text_tower(name: str, settings: dict, manifest_path: Path, split_path: Path, tokenizer: Path,
                   out_dir: Path, threads: int) -> None:
    """Pretrain text tower ``name`` (models/text_towers.py) on the training captions."""
    import torch

    from benchmark.text_towers import TowerTraining, pretrain_text_tower

    torch.set_num_threads(threads)
    summary = pretrain_text_tower(name, training_texts(manifest_path, split_path), tokenizer,
                                  TowerTraining(**settings), out_dir)
    print(f"text tower {name}: {summary['objective']} LM on {summary['train_captions']} captions, "
          f"{summary['steps']} steps; held-out loss {summary['held_out_loss_before']} -> "
          f"{summary['held_out_loss_after']} (chance {summary['chance_loss']}) -> {out_dir}")
