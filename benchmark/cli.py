"""python -m benchmark <command>: every workflow step is also a plain command.

Each command takes the config file and explicit input and output paths, and exits
non-zero with a one-line reason on bad input. This module only parses arguments and
dispatches: the data steps are in benchmark/data/steps.py, pretraining in
benchmark/train.py, the evaluation protocols in benchmark/evaluate/run.py, the tables in
benchmark/tables.py and the figures in benchmark/figures/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.datasets import DATASETS
from benchmark.errors import PREEMPTED_EXIT, BenchmarkError, Preempted, disk_errno, disk_error_line
from benchmark.figures.names import FAMILIES


def cmd_synth(args, config):
    from benchmark.data.steps import run_synth

    run_synth(args.dataset, config["data"][args.dataset], Path(args.out), args.threads)


def cmd_preprocess(args, config):
    from benchmark.data.steps import run_preprocess

    run_preprocess(args.dataset, config["data"][args.dataset], config["preprocess"], Path(args.out_dir), args.threads)


def cmd_check_data(args, config):
    from benchmark.data.steps import run_check_data

    run_check_data(args.dataset, config["data"].get(args.dataset), args.root, args.out)


def cmd_split(args, config):
    from benchmark.data.steps import run_split

    run_split(args.dataset, config["split"], Path(args.manifest), Path(args.out), config["tasks"])


def cmd_tokenizer(args, config):
    from benchmark.data.steps import run_tokenizer

    run_tokenizer(config["tokenizer"]["vocab_size"], Path(args.manifest), Path(args.split), Path(args.out))


def cmd_align_mlo(args, config):
    from benchmark.data.mlo_alignment import align_cached_mlo_views
    from benchmark.data.tables import read_manifest

    table = align_cached_mlo_views(read_manifest(Path(args.manifest)), Path(args.manifest).parent, Path(args.out))
    print(f"align-mlo: {len(table)} MLO images aligned to the CC orientation, "
          f"{int((~table['found_line'].astype(bool)).sum())} by the fallback angle (no pectoral line found)")


def cmd_pretrain(args, config):
    from benchmark.train import run_pretrain

    run_pretrain(config, args.model, args.seed, Path(args.manifest), Path(args.split), args.tokenizer,
                 Path(args.out_dir), args.threads, text_tower=args.text_tower,
                 aligned_mlo=Path(args.aligned_mlo) if args.aligned_mlo else None)


def cmd_import_checkpoint(args, config):
    from benchmark.external import import_checkpoint

    import_checkpoint(config, args.model, args.seed, Path(args.out_dir))


def cmd_text_tower(args, config):
    from benchmark.data.steps import run_text_tower

    run_text_tower(args.tower, config["text_towers"], Path(args.manifest), Path(args.split), Path(args.tokenizer),
                   Path(args.out_dir), args.threads)


def cmd_bench_train(args, config):
    from benchmark.perf.train import bench_train, format_result

    print(format_result(bench_train(args.model, args.preset, args.steps, args.batch, args.tokenizer, args.threads,
                                    args.loader_workers, args.streamed_from, args.precision)))


def cmd_plan(args, config):
    from benchmark.plan import run_plan

    given = {"mfu": args.mfu, "cores_per_gpu": args.cores_per_gpu}  # None: the plan's documented defaults
    run_plan(config, args.gpu, args.models, Path(args.out) if args.out else None,
             **{k: v for k, v in given.items() if v is not None})


def cmd_features(args, config):
    from benchmark.evaluate.run import load_model, run_features

    model = load_model(Path(args.checkpoint), args.threads)
    run_features(config, model, args.model, args.seed, Path(args.manifest), Path(args.split), Path(args.out),
                 args.zeroshot, args.alignment_out)


def cmd_zeroshot(args, config):
    from benchmark.evaluate.run import load_model, run_zeroshot

    model = load_model(Path(args.checkpoint), args.threads)
    run_zeroshot(config, model, args.model, args.seed, args.task, Path(args.manifest), Path(args.split),
                 Path(args.features), Path(args.out))


def cmd_probe(args, config):
    from benchmark.evaluate.run import run_probe

    run_probe(config, args.model, args.seed, args.task, Path(args.manifest), Path(args.split), Path(args.features),
              args.fraction, args.out, args.fixed_c_out)


BASELINE = "image_statistics"  # the hand-crafted baseline's rows in the table (benchmark/evaluate/image_statistics.py)
TABLE_FAMILIES = ("label_efficiency", "bars", "roc", "subgroups")  # figures drawn from table rows or predictions


def cmd_image_statistics(args, config):
    from benchmark.evaluate.image_statistics import run_image_statistics

    run_image_statistics(Path(args.manifest), Path(args.split), Path(args.out), config["image_statistics"]["size"])


def cmd_finetune(args, config):
    from benchmark.evaluate.run import run_finetune

    run_finetune(config, Path(args.checkpoint), args.model, args.seed, args.task, Path(args.manifest),
                 Path(args.split), args.fraction, args.out, args.threads)


def cmd_evaluate(args, config):
    from benchmark.evaluate.run import ProtocolJob, run_protocol

    run_protocol(config, args.protocol, ProtocolJob(args.model, args.seed, args.task, Path(args.input),
                                                    Path(args.manifest), Path(args.split), args.fraction or [],
                                                    args.out, args.threads))


def cmd_tsne(args, config):
    from benchmark.figures.tsne import run_tsne

    run_tsne(config, args.model, args.seed, args.dataset, Path(args.manifest), Path(args.split),
             Path(args.features), Path(args.out))


def _named_inputs_as(what: str, values: list[str], name: str = "model") -> dict[str, str]:
    pairs = [v.split("=", 1) for v in values]
    bad = [v for v, p in zip(values, pairs) if len(p) != 2]
    if bad:
        raise BenchmarkError(f"{what} {bad[0]}: expected <{name}>=<path>")
    return dict(pairs)


def _named_inputs(values: list[str]) -> dict[str, str]:
    return _named_inputs_as("figures: --inputs", values)


def cmd_figures(args, config):
    from benchmark.figures import draw

    reference = config["stats"].get("reference_model")
    models = sorted(config["models"], key=lambda m: m != reference)  # the reference first: the same colour always
    if config["image_statistics"]["enabled"] and args.family in TABLE_FAMILIES:  # it has table rows, no embeddings
        models += [BASELINE]
    try:
        written = draw.draw_family(args.family, Path(args.out_dir), models=models, tasks=config["tasks"],
                                   table=args.table, predictions=args.predictions,
                                   named_inputs=_named_inputs(args.inputs), budget=args.budget,
                                   subgroups=args.subgroups)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise BenchmarkError(f"figures {args.family}: {exc}") from None
    print(f"figures {args.family}: {len(written)} files -> {args.out_dir}")


def cmd_check_report(args, config):
    from benchmark.report_check import run_check_report

    run_check_report(Path(args.report), Path(args.out_dir))


def cmd_table(args, config):
    from benchmark.config import model_controls
    from benchmark.external import external_models
    from benchmark.tables import write_tables

    controls, control_of = model_controls(config["models"])
    controls += [BASELINE] if config["image_statistics"]["enabled"] else []  # a yardstick, not a method
    controls += external_models(config["models"])  # not trained under the shared budget
    write_tables(args.predictions, args.ledgers, Path(args.out), Path(args.budget_out), config["stats"], controls,
                 control_of)


def cmd_subgroups(args, config):
    from benchmark.subgroups import write_subgroups

    manifests = _named_inputs_as("subgroups: --manifests", args.manifests, name="dataset")
    write_subgroups(args.predictions, manifests, Path(args.out), config["subgroups"], config["stats"])


def cmd_models(args, config):
    from benchmark.registry import describe_models

    print("\n".join(describe_models()))


def cmd_check_config(args, config):
    from benchmark.config import check_weights
    from benchmark.external import (
        check_external,
        check_external_formats,
        external_models,
        written_by_the_run,
    )


    check_weights(config)
    check_external(config, [m for m in external_models(config["models"]) if not written_by_the_run(config, m)])
    read = check_external_formats(config)  # each external checkpoint into its model: the import job's work
    print(f"config {args.config}: ok ({len(config['models'])} models, {len(config['tasks'])} tasks, "
          f"every weights path present, {read} external checkpoints read)")


def cmd_make_test_weights(args, config):
    from benchmark.test_weights import make_test_weights

    for path in make_test_weights(Path(args.out)):
        print(path)


def cmd_convert_weights(args, config):
    from models.weights import convert_entry

    convert_entry(config, args.model, Path(args.folder), Path(args.out))


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
    add("align-mlo", cmd_align_mlo, "align every cached MLO image to the CC orientation along the pectoral "
        "line (GLAM's mlo_view)", manifest, (["--out"], {**req, "help": "table of the aligned images to write"}))
    add("pretrain", cmd_pretrain, "pretrain a model for the configured samples-seen budget", model, seed,
        manifest, split, (["--tokenizer"], {"default": None, "help": "tokenizer JSON (tiny presets with a BPE tokenizer)"}),
        (["--text-tower"], {"default": None, "help": "pretrained text tower folder (tiny presets that name one)"}),
        (["--aligned-mlo"], {"default": None, "help": "table written by align-mlo (models that ask for mlo_view)"}),
        (["--out-dir"], {**req, "help": "checkpoint folder to write (model, ledger, resumable state)"}))
    add("import-checkpoint", cmd_import_checkpoint, "an external model entry's checkpoint (publisher's format "
        "or another results folder's) as this benchmark's checkpoint, with a ledger saying it was not trained here",
        model, seed, (["--out-dir"], {**req, "help": "checkpoint folder to write"}))
    add("text-tower", cmd_text_tower, "pretrain a tiny text tower with its language-model objective on the "
        "training captions", manifest, split,
        (["--tower"], {**req, "help": "tower name (models/text_towers.py)"}),
        (["--tokenizer"], {**req, "help": "BPE tokenizer JSON (the tokenizer step's)"}),
        (["--out-dir"], {**req, "help": "Hugging Face model folder to write"}))
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
        (["--budget"], {"default": None, "help": "budget.csv (compute_ledger)"}),
        (["--subgroups"], {"default": None, "help": "subgroups.csv (subgroups)"}))
    add("zeroshot", cmd_zeroshot, "zero-shot predictions on the validation and test splits", model, seed, task, manifest, split,
        checkpoint, features, (["--out"], {**req, "help": "predictions CSV to write"}))
    add("probe", cmd_probe, "linear-probe predictions on the validation and test splits", model, seed, task, manifest, split,
        features, (["--fraction"], {"type": float, "nargs": "+", **req}),
        (["--out"], {"nargs": "+", **req, "help": "one predictions file per (fraction, draw), fraction-major"}),
        (["--fixed-c-out"], {"nargs": "*", "default": [], "help": "also write each cell at linear_probe.fixed_C, "
                                                                   "one file per (fraction, draw)"}))
    add("image-statistics", cmd_image_statistics, "the hand-crafted baseline's features: global intensity "
        "statistics of every image (a features file the probe reads)", manifest, split,
        (["--out"], {**req, "help": "features .npz to write"}))
    add("finetune", cmd_finetune, "fine-tune encoder + linear head; predictions on validation and test", model,
        seed, task, manifest, split, checkpoint, (["--fraction"], {"type": float, "nargs": "+", **req}),
        (["--out"], {"nargs": "+", **req, "help": "one predictions file per (fraction, draw), fraction-major"}))
    add("evaluate", cmd_evaluate, "run a protocol registered with a run function (benchmark/protocols.py)",
        (["--protocol"], {**req, "help": "the protocol's registered name"}), model, seed, task, manifest, split,
        (["--input"], {**req, "help": "the dataset's features file, or the checkpoint folder (the protocol's reads)"}),
        (["--fraction"], {"type": float, "nargs": "+", "help": "label fractions (fraction protocols)"}),
        (["--out"], {"nargs": "+", **req, "help": "one predictions file per (fraction, draw), fraction-major"}))
    add("table", cmd_table, "bootstrap statistics: predictions to table.csv (and budget.csv)",
        (["--predictions"], {"nargs": "+", **req}), (["--ledgers"], {"nargs": "*", "default": []}),
        (["--out"], {**req, "help": "table.csv to write (with .md, .tex, .html beside it)"}),
        (["--budget-out"], {"default": "results/budget.csv", "help": "budget CSV from the ledgers"}))
    add("subgroups", cmd_subgroups, "metrics per patient subgroup and their gaps to the whole test set",
        (["--predictions"], {"nargs": "+", **req}),
        (["--manifests"], {"nargs": "+", **req, "help": "<dataset>=<manifest.csv> of each evaluated dataset"}),
        (["--out"], {**req, "help": "subgroups.csv to write"}))
    add("bench-train", cmd_bench_train, "training vs data-loader samples/s, TFLOP/s and MFU of one model",
        (["--model"], {**req, "help": "a registered method (python -m benchmark models)"}),
        (["--preset"], {"default": "tiny", "help": "preset of the method"}),
        (["--steps"], {"type": int, "default": 10, "help": "timed optimizer steps"}),
        (["--batch"], {"type": int, "default": None, "help": "default: the preset's batch size"}),
        (["--tokenizer"], {"default": None, "help": "tokenizer JSON (tiny presets)"}),
        (["--loader-workers"], {"type": int, "default": 0, "help": "data-loader worker processes"}),
        (["--streamed-from"], {"type": int, "default": None, "metavar": "SIDE",
                               "help": "read the images from random 16-bit PNGs of this long side instead of memory"}),
        (["--precision"], {"choices": ["auto", "bf16", "fp32"], "default": "auto",
                           "help": "training precision (benchmark/precision.py; auto: bf16 where native)"}))
    add("plan", cmd_plan, "capacity plan of the config's pretraining: parameters, FLOPs, GPU-hours, memory per "
        "GPU, loader cores, cache disk (measured on this CPU; no data or weights read)",
        (["--gpu"], {"choices": ["H100", "H200"], "default": "H100", "help": "the GPU the estimates are for"}),
        (["--mfu"], {"type": float, "default": None, "help": "model FLOPs utilisation assumed (default 0.30: "
                                                               "benchmark/plan.py says why)"}),
        (["--cores-per-gpu"], {"type": _positive_int, "default": None, "help": "CPU cores a node has per GPU "
                                                                                "(default 14, a DGX H100's)"}),
        (["--models"], {"nargs": "+", "default": None, "help": "plan only these model entries (default: every "
                                                               "one the config pretrains)"}),
        (["--out"], {"default": None, "help": "CSV to write (default: <results>/plan.csv)"}))
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
MODEL_COMMANDS = {"pretrain", "import-checkpoint", "models", "check-config", "convert-weights", "plan"}
NO_DATA_COMMANDS = {"models", "make-test-weights", "convert-weights", "plan"}


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
    except Preempted as exc:  # a scheduler's stop: the state is saved; requeue or retry resumes it
        print(str(exc), file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    except Exception as exc:  # a full disk (from any library), or a path that is a file where a folder is needed, ...
        code = disk_errno(exc)
        if code is not None:
            print(f"error: {disk_error_line(exc, code, _outputs(args))}", file=sys.stderr)
            sys.exit(2)
        if not isinstance(exc, OSError) or exc.filename is None:
            raise
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(2)


def _outputs(args) -> list[str]:
    """The paths a command writes (its ``--out``, ``--out-dir``), to name in a disk error."""
    paths = []
    for name in ("out", "out_dir"):
        value = getattr(args, name, None)
        paths += [str(v) for v in (value if isinstance(value, list) else [value]) if v]
    return paths


if __name__ == "__main__":
    main()
