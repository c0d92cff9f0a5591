"""python -m benchmark <command>: every workflow step is also a plain command.

Each command takes the config file and explicit input and output paths, and exits
non-zero with a one-line reason on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark.datasets import DATASETS
from benchmark.errors import BenchmarkError
from benchmark.figures.names import FAMILIES


def _manifest(path: str):
    from benchmark.data.tables import read_csv

    return read_csv(path, "manifest", ["image_id", "patient_id", "exam_id", "breast_id", "png"],
                    dtype={"image_id": str, "patient_id": str, "exam_id": str, "breast_id": str},
                    unique="image_id", hint=" (the preprocess step writes it)")


def cmd_synth(args, config):
    from benchmark.datasets import DATASETS

    spec = config["data"][args.dataset].get("synthetic")
    writer = DATASETS[args.dataset].write_synthetic
    if spec is None or writer is None:
        raise BenchmarkError(f"config: data.{args.dataset}.synthetic: not set, nothing to generate")
    summary = writer(Path(args.out), spec["patients"], spec.get("seed", 0),
                     (spec.get("rows", 512), spec.get("cols", 416)), args.threads)
    print(f"synth {args.dataset}: {summary['images']} images of {summary['patients']} patients in {args.out}")


def cmd_preprocess(args, config):
    import pandas as pd

    from benchmark.data.check import load_records
    from benchmark.data.exams import add_view_pairs
    from benchmark.data.preprocess import PreprocessSettings, preprocess
    from benchmark.data.tables import EXCLUSION_COLUMNS, MANIFEST_COLUMNS

    entry = config["data"][args.dataset]
    records, excluded, rows_in = load_records(args.dataset, entry)
    manifest, failed = preprocess(records, Path(entry["root"]), Path(args.out_dir),
                                  PreprocessSettings(**config["preprocess"]),
                                  workers=args.threads)
    exclusions = pd.concat([excluded, failed], ignore_index=True).reindex(columns=EXCLUSION_COLUMNS)
    dropped = int((exclusions["scope"] == "all").sum())
    if manifest.empty:
        reasons = exclusions[exclusions["scope"] == "all"]["reason"].value_counts()
        counts = "; ".join(f"{reason}: {n}" for reason, n in reasons.head(5).items()) or "the table has no rows"
        raise BenchmarkError(f"preprocess {args.dataset}: no usable image of {rows_in} rows ({counts})")
    if rows_in != len(manifest) + dropped:
        raise BenchmarkError(f"preprocess: {rows_in} rows in but {len(manifest)} kept + {dropped} excluded")
    extra = [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    manifest = add_view_pairs(manifest.reindex(columns=MANIFEST_COLUMNS + extra))
    for col in ("density", "birads", "cancer"):
        manifest[col] = manifest[col].astype("Int64")
    manifest.to_csv(Path(args.out_dir) / "manifest.csv", index=False)
    exclusions.to_csv(Path(args.out_dir) / "exclusions.csv", index=False)
    print(f"preprocess {args.dataset}: {rows_in} rows in, {len(manifest)} images kept, {dropped} excluded "
          f"({len(exclusions) - dropped} task-level exclusions); see {args.out_dir}/exclusions.csv")


def cmd_check_data(args, config):
    import json

    from benchmark.config import dataset_defaults
    from benchmark.data.check import check_data, format_report

    entry = dict(config["data"].get(args.dataset) or {})
    if args.root:
        entry["root"] = args.root
    if "root" not in entry:
        raise BenchmarkError(f"check-data: no --root and no data.{args.dataset}.root in the config")
    report = check_data(args.dataset, dataset_defaults(args.dataset) | entry)
    print(format_report(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if report["images_usable"] == 0:
        raise BenchmarkError(f"check-data: no usable image in {entry['root']}")


def cmd_bench_train(args, config):
    from benchmark.perf.train import bench_train, format_result

    print(format_result(bench_train(args.model, args.preset, args.steps, args.batch, args.tokenizer, args.threads,
                                    args.loader_workers, args.streamed_from)))


def cmd_split(args, config):
    from benchmark.data.split import check_split, make_split, write_split
    from benchmark.tasks import TASKS

    split_cfg = config["split"]
    manifest = _manifest(args.manifest)
    if manifest.empty:
        raise BenchmarkError(f"split {args.dataset}: {args.manifest} has no image to split")
    stratify = split_cfg["stratify"].get(args.dataset) or DATASETS[args.dataset].tasks[0].column
    table = make_split(manifest, stratify, split_cfg["seed"],
                       split_cfg["ratios"], split_cfg["fractions"], split_cfg["draws"])
    tasks = [t for t in TASKS.values() if t.dataset == args.dataset]
    for line in check_split(table, manifest, tasks, args.dataset):
        print(f"warning: {line}", file=sys.stderr)
    digest = write_split(table, Path(args.out))
    counts = table["split"].value_counts().to_dict()
    print(f"split {args.dataset}: {counts} patients; sha256 {digest[:12]}")


def cmd_tokenizer(args, config):
    from benchmark.data.captions import embed_sentences, join_sentences
    from benchmark.data.split import read_split
    from benchmark.data.tokenizer import train_tokenizer
    from benchmark.train import training_records

    records, _ = training_records(_manifest(args.manifest), read_split(args.split))
    texts = []
    for rec in records.to_dict("records"):
        texts.append(join_sentences(embed_sentences(rec)))
        texts.append(join_sentences(embed_sentences(rec | {k: "" for k in ("age", "race", "ethnicity", "view")})))
    tok = train_tokenizer(texts, config["tokenizer"]["vocab_size"], Path(args.out))
    print(f"tokenizer: {tok.get_vocab_size()} tokens from {len(records)} training captions -> {args.out}")


def _model_entry(config, name):
    if name not in config["models"]:
        raise BenchmarkError(f"config: models.{name}: no such model entry")
    return config["models"][name]


def cmd_pretrain(args, config):
    from benchmark.data.split import read_split, split_hash
    from benchmark.train import RunOptions, pretrain

    entry = _model_entry(config, args.model)
    context = dict(entry.get("overrides", {}))
    if args.tokenizer:
        context["tokenizer"] = args.tokenizer
    if entry.get("weights"):
        context["weights"] = entry["weights"]
    options = RunOptions.from_config(config["pretrain"], pretrain=entry.get("pretrain", True),
                                     images=config["images"])
    ledger = pretrain(method=entry["method"], preset=entry["preset"], context=context,
                      manifest=_manifest(args.manifest), split=read_split(args.split),
                      cache_dir=Path(args.manifest).parent, options=options, seed=args.seed,
                      out_dir=Path(args.out_dir), threads=args.threads,
                      mask_prob=config["pretrain"]["caption_mask_prob"], split_sha256=split_hash(args.split))
    if ledger["processes"] == 1 or os.environ.get("RANK", "0") == "0":
        print(f"pretrain {args.model}: {ledger['samples_seen']} samples, {ledger['optimizer_steps']} steps, "
              f"{ledger['wall_seconds']:.0f} s, final loss {ledger['final_loss']}")


ZEROSHOT_PROTOCOLS = ("zeroshot", "zeroshot_prefixed")


def cmd_features(args, config):
    import numpy as np
    import torch

    from benchmark.checkpoint import load_checkpoint
    from benchmark.data.split import read_split, split_records
    from benchmark.evaluate.alignment import alignment_maps
    from benchmark.evaluate.device import evaluation_device
    from benchmark.evaluate.encode import encode_images

    torch.set_num_threads(args.threads)
    for protocol, _, _ in args.zeroshot:
        if protocol not in ZEROSHOT_PROTOCOLS:
            raise BenchmarkError(f"features: --zeroshot {protocol}: protocol must be one of {ZEROSHOT_PROTOCOLS}")
    model = load_checkpoint(Path(args.checkpoint)).to(evaluation_device())
    records = split_records(_manifest(args.manifest), read_split(args.split), ("train", "val", "test"))
    features, embeddings = encode_images(model, Path(args.manifest).parent, records["png"].tolist())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, image_id=records["image_id"].to_numpy(str), features=features.astype(np.float32),
             embeddings=embeddings.astype(np.float32))
    print(f"features: {features.shape}, embeddings {embeddings.shape} -> {args.out}")
    # Zero-shot and the alignment maps need the loaded model: made here, saving a model load.
    for protocol, task, out in args.zeroshot:
        _zeroshot(args, config, model, task, args.out, out, protocol)
    if args.alignment_out:
        try:
            maps = alignment_maps(model, records, Path(args.manifest).parent,
                                  config["figures"]["alignment_examples"], args.seed)
        except ValueError as exc:
            raise BenchmarkError(f"features {args.model}: alignment maps: {exc}") from None
        np.savez(args.alignment_out, **maps)
        shown = len(maps["images"]) if maps["supported"] else "none: the model has no sentence_patch_similarity"
        print(f"alignment maps ({shown}) -> {args.alignment_out}")


def _task_records(args, config, splits, task_key):
    from benchmark.data.split import read_split, split_records
    from benchmark.evaluate.predictions import labelled
    from benchmark.tasks import get_task

    dataset, name = task_key.split("/")
    task = get_task(dataset, name)
    return task, labelled(split_records(_manifest(args.manifest), read_split(args.split), splits), task)


def _load_features(path, records):
    import numpy as np

    if not Path(path).is_file():
        raise BenchmarkError(f"{path}: features file not found (the features step writes it)")
    try:
        data = np.load(path)
        data = {key: data[key] for key in ("image_id", "features", "embeddings")}
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise BenchmarkError(f"{path}: not a features file ({str(exc).splitlines()[0][:120]})") from None
    index = {image_id: i for i, image_id in enumerate(data["image_id"])}
    missing = [i for i in records["image_id"] if i not in index]
    if missing:
        raise BenchmarkError(f"{path}: no features for {len(missing)} image(s), e.g. {missing[0]}")
    rows = [index[i] for i in records["image_id"]]
    return data["features"][rows], data["embeddings"][rows]


def _zeroshot(args, config, model, task_key, features_path, out, protocol="zeroshot"):
    from benchmark.evaluate.predictions import write_predictions
    from benchmark.evaluate.zeroshot import prefixed_zeroshot_scores, zeroshot_scores
    from benchmark.prompts import load_prompts

    task, records = _task_records(args, config, ("val", "test"), task_key)  # val: thresholds for sens/spec
    _, embeddings = _load_features(features_path, records)
    prompts = load_prompts(Path(config["zeroshot"]["prompts"]), task)
    if protocol == "zeroshot_prefixed":
        scores = prefixed_zeroshot_scores(model, embeddings, prompts, records)
    else:
        scores = zeroshot_scores(model, embeddings, prompts)
    write_predictions(Path(out), records, scores, task=task, protocol=protocol, fraction=None,
                      model=args.model, seed=args.seed)
    print(f"{protocol} {args.model} {task.key}: {len(records)} validation and test images -> {out}")


def cmd_zeroshot(args, config):
    import torch

    from benchmark.checkpoint import load_checkpoint
    from benchmark.evaluate.device import evaluation_device

    torch.set_num_threads(args.threads)
    model = load_checkpoint(Path(args.checkpoint)).to(evaluation_device())
    _zeroshot(args, config, model, args.task, args.features, args.out)


def cmd_probe(args, config):
    import json

    import numpy as np
    import pandas as pd

    from benchmark.data.split import fraction_draws, fraction_patients, read_split
    from benchmark.evaluate.predictions import write_predictions
    from benchmark.evaluate.probe import fit_probe, fit_sgd_probe, predict_probe, predict_sgd_probe

    cells = [(f, d) for f in args.fraction for d in fraction_draws(f, config["split"]["draws"])]
    if len(cells) != len(args.out):
        raise BenchmarkError(f"probe: give one --out per (fraction, draw): {len(cells)} for {args.fraction} with "
                             f"split.draws {config['split']['draws']}")
    task, records = _task_records(args, config, ("train", "val", "test"), args.task)
    split = read_split(args.split)
    val, test = records[records["split"] == "val"], records[records["split"] == "test"]
    x_val, x_test = _load_features(args.features, val)[0], _load_features(args.features, test)[0]
    probe_cfg = config["linear_probe"]
    for (fraction, draw), out in zip(cells, args.out):
        in_fraction = fraction_patients(split, fraction, draw, args.split)
        train = records[(records["split"] == "train") & records["patient_id"].isin(in_fraction)]
        x_train, y_train, y_val = _load_features(args.features, train)[0], train["label"].to_numpy(), \
            val["label"].to_numpy()
        try:
            if probe_cfg["solver"] == "mama_sgd":
                scaler, clf, chosen, sweep = fit_sgd_probe(x_train, y_train, x_val, y_val, task.n_classes,
                                                           probe_cfg["epochs"], probe_cfg["batch_size"], args.seed)
                predict = predict_sgd_probe
            else:
                scaler, clf, chosen, sweep = fit_probe(x_train, y_train, x_val, y_val, task.n_classes,
                                                       probe_cfg["C"], probe_cfg["max_iter"], args.seed)
                predict = predict_probe
        except ValueError as exc:
            raise BenchmarkError(f"probe {args.model} {task.key} fraction {fraction} draw {draw}: {exc}") from None
        scores = predict(scaler, clf, np.concatenate([x_val, x_test]), task.n_classes)
        write_predictions(Path(out), pd.concat([val, test]), scores, task=task, protocol="linear_probe",
                          fraction=fraction, model=args.model, seed=args.seed, draw=draw)
        choice = "chosen_epoch" if probe_cfg["solver"] == "mama_sgd" else "chosen_C"
        Path(out).with_suffix(".json").write_text(json.dumps(
            {"solver": probe_cfg["solver"], choice: chosen, "train_images": len(train),
             "train_patients": train["patient_id"].nunique(), "sweep": sweep}, indent=2) + "\n")
        print(f"probe {args.model} {task.key} @ {fraction:g} draw {draw}: {len(train)} training images, "
              f"{choice} {chosen}")


def cmd_finetune(args, config):
    import json

    import numpy as np
    import pandas as pd
    import torch

    from benchmark.checkpoint import load_checkpoint
    from benchmark.data.images import open_images
    from benchmark.data.split import fraction_patients, read_split
    from benchmark.evaluate.device import evaluation_device
    from benchmark.evaluate.finetune import finetune, predict
    from benchmark.evaluate.predictions import write_predictions

    if len(args.fraction) != len(args.out):
        raise BenchmarkError("finetune: give one --out per --fraction")
    torch.set_num_threads(args.threads)
    cfg = config["finetune"]
    task, records = _task_records(args, config, ("train", "val", "test"), args.task)
    split = read_split(args.split)
    cache = Path(args.manifest).parent
    val, test = records[records["split"] == "val"], records[records["split"] == "test"]
    evaluated = pd.concat([val, test])
    val_u8 = test_u8 = None
    memory_gib = config["images"]["memory_gib"] / 3  # shared by the training, validation and test images
    for fraction, out in zip(args.fraction, args.out):
        in_fraction = fraction_patients(split, fraction, 0, args.split)
        train = records[(records["split"] == "train") & records["patient_id"].isin(in_fraction)]
        model = load_checkpoint(Path(args.checkpoint)).to(evaluation_device())  # afresh for every fraction
        size = model.image_size
        if val_u8 is None:  # the same images for every fraction: opened once
            val_u8, test_u8 = (open_images(cache, part["png"].tolist(), size, memory_gib) for part in (val, test))
        try:
            classifier, history = finetune(
                model, open_images(cache, train["png"].tolist(), size, memory_gib), train["label"].to_numpy(),
                val_u8, val["label"].to_numpy(), task.n_classes,
                steps=cfg["steps"], batch_size=cfg["batch_size"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                eval_every=cfg["eval_every"], patience=cfg["patience"], seed=args.seed)
        except ValueError as exc:
            raise BenchmarkError(f"finetune {args.model} {task.key} fraction {fraction}: {exc}") from None
        scores = np.concatenate([predict(classifier, val_u8), predict(classifier, test_u8)])
        write_predictions(Path(out), evaluated, scores, task=task, protocol="finetune", fraction=fraction,
                          model=args.model, seed=args.seed)
        best = max(history, key=lambda h: (h["val_auc"], h["val_bacc"]))
        Path(out).with_suffix(".json").write_text(json.dumps(
            {"train_images": len(train), "steps_run": history[-1]["step"], "best_step": best["step"],
             "history": history}, indent=2) + "\n")
        print(f"finetune {args.model} {task.key} @ {fraction:g}: {len(train)} images, best step {best['step']}")


def cmd_tsne(args, config):
    from benchmark.data.split import read_split, split_records
    from benchmark.figures.tsne import embed_2d

    records = split_records(_manifest(args.manifest), read_split(args.split), ("test",))
    _, embeddings = _load_features(args.features, records)
    tasks = [t for t in config["tasks"] if t.split("/")[0] == args.dataset]
    try:
        coordinates = embed_2d(embeddings, records, tasks, config["figures"]["tsne_max_points"], args.seed)
    except ValueError as exc:
        raise BenchmarkError(f"tsne {args.model} {args.dataset}: {exc}") from None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    coordinates.to_csv(args.out, index=False)
    print(f"tsne {args.model} {args.dataset}: {len(coordinates)} test images -> {args.out}")


def _named_inputs(values: list[str]) -> dict[str, str]:
    pairs = [v.split("=", 1) for v in values]
    bad = [v for v, p in zip(values, pairs) if len(p) != 2]
    if bad:
        raise BenchmarkError(f"figures: --inputs {bad[0]}: expected <model>=<path>")
    return dict(pairs)


def cmd_figures(args, config):
    from benchmark.figures import draw

    reference = config["stats"].get("reference_model")
    models = sorted(config["models"], key=lambda m: m != reference)  # the reference first: the same colour always
    tasks = config["tasks"]
    out_dir = Path(args.out_dir)
    try:
        written = draw.draw_family(args.family, out_dir, models=models, tasks=tasks, table=args.table,
                                   predictions=args.predictions, named_inputs=_named_inputs(args.inputs),
                                   budget=args.budget)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise BenchmarkError(f"figures {args.family}: {exc}") from None
    print(f"figures {args.family}: {len(written)} files -> {out_dir}")


def cmd_check_report(args, config):
    from benchmark.report_check import check_report

    try:
        check = check_report(Path(args.report), Path(args.out_dir))
    except (FileNotFoundError, TimeoutError) as exc:
        raise BenchmarkError(f"check-report: {exc}") from None
    for name, kind in check.viewed.items():
        print(f"ok      {kind:5s}  {name}")
    for name, why in check.failed.items():
        print(f"FAILED  {name}: {why}")
    for message in check.console_errors:
        print(f"console error: {message}")
    print(f"check-report: {len(check.viewed)} results rendered, {len(check.failed)} failed, "
          f"{len(check.console_errors)} console errors; screenshots in {args.out_dir}")
    if not check.ok:
        raise BenchmarkError(f"check-report: {args.report} did not render cleanly (see above)")


def cmd_table(args, config):
    from benchmark.tables import build_budget, build_table
    from benchmark.wide_tables import to_html, to_latex, to_markdown

    stats = config["stats"]
    table = build_table([Path(p) for p in args.predictions], stats["n_boot"], stats["seed"], stats["ci"],
                        stats.get("reference_model"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    out.with_suffix(".md").write_text(to_markdown(table))
    out.with_suffix(".tex").write_text(to_latex(table))
    out.with_suffix(".html").write_text(to_html(table))
    if args.ledgers:
        build_budget([Path(p) for p in args.ledgers]).to_csv(args.budget_out, index=False)
    print(f"table: {len(table)} rows -> {args.out}")


def cmd_models(args, config):
    """Each registered method with its presets' sizes, built on the meta device (no weights
    are loaded or allocated, so paper presets list instantly)."""
    import torch

    from benchmark.registry import available_models, build_model, model_class

    for name in available_models():
        sizes = []
        for preset in sorted(model_class(name).presets):
            try:
                with torch.device("meta"):
                    model = build_model(name, preset)
            except BenchmarkError as exc:
                sizes.append(f"{preset}: ({exc})")
                continue
            total = sum(p.numel() for p in model.parameters())
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            sizes.append(f"{preset}: {total / 1e6:,.1f} M params ({trainable / 1e6:,.1f} M trainable)")
        print(f"{name:10s} {'; '.join(sizes)}")


def cmd_check_config(args, config):
    from benchmark.config import check_weights

    check_weights(config)
    print(f"config {args.config}: ok ({len(config['models'])} models, {len(config['tasks'])} tasks, "
          "every weights path present)")


def cmd_make_test_weights(args, config):
    from benchmark.test_weights import make_test_weights

    for path in make_test_weights(Path(args.out)):
        print(path)


def cmd_convert_weights(args, config):
    from benchmark.registry import merge_settings, model_class
    from models.encoders import image_backbone
    from models.weights import convert_to_timm

    if args.model not in config["models"]:
        raise BenchmarkError(f"convert-weights: models.{args.model}: no such model entry in {args.config}")
    if not (Path(args.folder) / "config.json").is_file():
        raise BenchmarkError(f"convert-weights: {args.folder}: not a Hugging Face model folder (no config.json)")
    entry = config["models"][args.model]
    preset = merge_settings(model_class(entry["method"]).presets[entry["preset"]], entry.get("overrides", {}))
    if "image" not in preset:
        raise BenchmarkError(f"convert-weights: {entry['method']} builds its image encoder itself (no timm backbone)")
    backbone = image_backbone(preset["image"]["name"], preset["image_size"], **preset["image"].get("kwargs", {}))
    count = convert_to_timm(Path(args.folder), backbone, Path(args.out))
    print(f"convert-weights: {count} tensors for {preset['image']['name']} -> {args.out}")


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, fn, help_, *arguments):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", default="config/config.yaml", help="config file (YAML)")
        p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads (default: config threads)")
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
        p.set_defaults(fn=fn)

    req = {"required": True}
    dataset = (["--dataset"], {"required": True, "choices": list(DATASETS), "help": "which dataset of the config"})
    manifest = (["--manifest"], {**req, "help": "manifest.csv written by preprocess"})
    split = (["--split"], {**req, "help": "split CSV written by split"})
    model = (["--model"], {**req, "help": "model entry name in the config"})
    seed = (["--seed"], {"type": int, "default": 0, "help": "pretraining seed (one of the config's seeds)"})
    task = (["--task"], {**req, "help": "dataset/task, e.g. embed/density"})
    checkpoint = (["--checkpoint"], {**req, "help": "checkpoint folder written by pretrain"})
    features = (["--features"], {**req, "help": "features .npz written by features"})
    add("synth", cmd_synth, "write synthetic EMBED- or RSNA-format data", dataset,
        (["--out"], {**req, "help": "dataset folder to write (tables and DICOMs)"}))
    add("preprocess", cmd_preprocess, "DICOM tables to PNG cache + manifest.csv + exclusions.csv", dataset,
        (["--out-dir"], {**req, "help": "cache folder: images/, manifest.csv, exclusions.csv"}))
    add("check-data", cmd_check_data, "validate a dataset folder: columns, files, counts, exclusions", dataset,
        (["--root"], {"default": None, "help": "dataset folder (default: data.<dataset>.root)"}),
        (["--out"], {"default": None, "help": "also write the report as JSON"}))
    add("split", cmd_split, "patient-level train/val/test split with nested fractions", dataset, manifest,
        (["--out"], {**req, "help": "split CSV to write (one row per patient)"}))
    add("tokenizer", cmd_tokenizer, "train a BPE tokenizer on the training captions", manifest, split,
        (["--out"], {**req, "help": "tokenizer JSON to write"}))
    add("pretrain", cmd_pretrain, "pretrain a model for the configured samples-seen budget", model, seed,
        manifest, split, (["--tokenizer"], {"default": None, "help": "tokenizer JSON (tiny presets with a BPE tokenizer)"}),
        (["--out-dir"], {**req, "help": "checkpoint folder to write (model, ledger, resumable state)"}))
    add("features", cmd_features, "image features and embeddings for every split (+ zero-shot predictions, alignment maps)",
        model, seed, checkpoint, manifest, split, (["--out"], {**req, "help": "features .npz to write"}),
        (["--zeroshot"], {"nargs": 3, "action": "append", "default": [], "metavar": ("PROTOCOL", "TASK", "OUT"),
                          "help": "also score TASK zero-shot into OUT; PROTOCOL zeroshot (prompts as they are) "
                                  "or zeroshot_prefixed (each image's metadata in front, MaMA's way)"}),
        (["--alignment-out"], {"default": None, "help": "also save sentence-to-patch maps of a few test images "
                                                        "(.npz; for the alignment figure)"}))
    add("tsne", cmd_tsne, "2-D t-SNE of the test-split image embeddings, with each task's labels", model, seed,
        dataset, manifest, split, features, (["--out"], {**req, "help": "coordinates CSV to write"}))
    add("figures", cmd_figures, "draw one figure family from saved predictions, embeddings and ledgers",
        (["family"], {"choices": list(FAMILIES)}), (["--out-dir"], {**req, "help": "figures folder"}),
        (["--table"], {"default": None, "help": "table.csv (label_efficiency, bars, roc)"}),
        (["--predictions"], {"nargs": "*", "action": "extend", "default": [], "help": "predictions files (roc)"}),
        (["--inputs"], {"nargs": "*", "action": "extend", "default": [], "help": "tsne: coordinate CSVs as <model>:<dataset>=<path>; "
                                                              "alignment: maps as <model>=<path>"}),
        (["--budget"], {"default": None, "help": "budget.csv (compute_ledger)"}))
    add("zeroshot", cmd_zeroshot, "zero-shot predictions on the validation and test splits", model, seed, task, manifest, split,
        checkpoint, features, (["--out"], {**req, "help": "predictions CSV to write"}))
    add("probe", cmd_probe, "linear-probe predictions on the validation and test splits", model, seed, task, manifest, split,
        features, (["--fraction"], {"type": float, "nargs": "+", **req}),
        (["--out"], {"nargs": "+", **req, "help": "one predictions file per (fraction, draw), fraction-major"}))
    add("finetune", cmd_finetune, "fine-tune encoder + linear head; predictions on validation and test", model,
        seed, task, manifest, split, checkpoint, (["--fraction"], {"type": float, "nargs": "+", **req}),
        (["--out"], {"nargs": "+", **req, "help": "one predictions file per fraction"}))
    add("table", cmd_table, "bootstrap statistics: predictions to table.csv (and budget.csv)",
        (["--predictions"], {"nargs": "+", **req}), (["--ledgers"], {"nargs": "*", "default": []}),
        (["--out"], {**req, "help": "table.csv to write (with .md, .tex, .html beside it)"}),
        (["--budget-out"], {"default": "results/budget.csv", "help": "budget CSV from the ledgers"}))
    add("bench-train", cmd_bench_train, "training vs data-loader samples/s, TFLOP/s and MFU of one model",
        (["--model"], {**req, "help": "a registered method (python -m benchmark models)"}),
        (["--preset"], {"default": "tiny", "help": "preset of the method"}),
        (["--steps"], {"type": int, "default": 10, "help": "timed optimizer steps"}),
        (["--batch"], {"type": int, "default": None, "help": "default: the preset's batch size"}),
        (["--tokenizer"], {"default": None, "help": "tokenizer JSON (tiny presets)"}),
        (["--loader-workers"], {"type": int, "default": 0, "help": "data-loader worker processes"}),
        (["--streamed-from"], {"type": int, "default": None, "metavar": "SIDE",
                               "help": "read the images from random 16-bit PNGs of this long side instead of memory"}))
    add("check-report", cmd_check_report, "open the HTML report in headless Chromium, view and screenshot every "
        "result", (["--report"], {"default": "results/report.html", "help": "the report HTML"}),
        (["--out-dir"], {"default": "results/report-check", "help": "screenshots go here"}))
    add("models", cmd_models, "list registered models and their presets' parameter counts")
    add("check-config", cmd_check_config, "validate a config file, every weights path included")
    add("make-test-weights", cmd_make_test_weights, "small random weights in every real format the paper presets "
        "read (for config/paper-smoke.yaml)", (["out"], {"help": "folder to write (e.g. weights-smoke)"}))
    add("convert-weights", cmd_convert_weights, "a Hugging Face DINOv2 folder as a timm safetensors file for a "
        "model entry's image backbone", (["folder"], {"help": "Hugging Face model folder"}),
        (["out"], {"help": "timm state dict to write (.safetensors)"}),
        (["--model"], {**req, "help": "model entry name in the config (its preset and overrides give the backbone)"}))
    return parser


# Commands that build models from config entries check them against the registry; those
# that read no data need no data folder.
MODEL_COMMANDS = {"pretrain", "models", "check-config", "convert-weights"}
NO_DATA_COMMANDS = {"models", "make-test-weights", "convert-weights"}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        from benchmark.config import load_config

        config = load_config(args.config, models=args.command in MODEL_COMMANDS,
                             data=args.command not in NO_DATA_COMMANDS)
        if args.threads is None:
            args.threads = config.get("threads", 2)
        args.fn(args, config)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a path that is a file where a folder is needed, unwritable, ...
        if exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
