"""External checkpoints: a model entry evaluated, never pretrained here (``external: true``).

The entry names its method and preset (the architecture) and a ``checkpoint``:

- a checkpoint folder of this benchmark (``model.json`` + ``model.safetensors``, e.g. from
  another results folder or cluster): copied as it is; its method and preset must be the
  entry's;
- a file (or Hugging Face folder) in the publisher's format: read by the method's
  ``read_external`` (models/: an open_clip checkpoint or a Hugging Face CLIP folder for
  ``clip``, a released Mammo-CLIP ``.tar`` for ``mammoclip``) into the model the entry
  describes (``overrides``, ``weights`` for a text encoder's tokenizer).

``{results}`` in the path stands for the run's results folder (benchmark/config.py).

``import-checkpoint`` writes the benchmark's own checkpoint (the evaluation reads nothing
else) and a ledger saying the model was not trained here; the table marks its rows and
keeps them out of the primary comparisons (docs/real-data.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from benchmark.errors import BenchmarkError

# torch and the models are imported inside the functions that need them: the workflow
# imports this module when it parses (external_models, source_file)


def external_models(models: dict) -> list[str]:
    return sorted(name for name, entry in models.items() if entry.get("external"))


def is_benchmark_checkpoint(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "model.json").is_file()


def is_hf_folder(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file() and not is_benchmark_checkpoint(path)


def source_file(entry: dict) -> Path:
    """The file whose content the import reads: a checkpoint folder's weights (a path without
    a suffix that does not exist yet is taken for a folder another job of the run writes), a
    Hugging Face folder's weights file, else the file itself."""
    from models.encoders import HF_WEIGHT_FILES

    path = Path(entry["checkpoint"])
    if is_hf_folder(path):
        return next((path / name for name in HF_WEIGHT_FILES if (path / name).is_file()), path / "config.json")
    return path / "model.safetensors" if path.is_dir() or (not path.exists() and not path.suffix) else path


def written_by_the_run(config: dict, name: str) -> bool:
    """An external checkpoint inside the run's own results folder that is not there yet:
    another job of the run writes it (the ci run re-reads its own CLIP this way)."""
    path = Path(config["models"][name]["checkpoint"])
    return not path.exists() and path.resolve().is_relative_to(Path(config["results"]).resolve())


def check_external(config: dict, names: list[str] | None = None) -> None:
    """Every external entry (of ``names``, default all) names a checkpoint that exists in a
    form its method reads; one line naming the model and the file."""
    from benchmark.registry import model_class
    for name in names if names is not None else external_models(config["models"]):
        entry = config["models"][name]
        if not entry.get("external"):
            continue
        where = f"config: models.{name}.checkpoint"
        if not entry.get("checkpoint"):
            raise BenchmarkError(f"{where}: an external model needs a checkpoint (a file in its publisher's "
                                 "format or a checkpoint folder of this benchmark)")
        if not entry.get("pretrain", True) or entry.get("captions", "own") != "own":
            raise BenchmarkError(f"config: models.{name}: an external model is not trained here; "
                                 "pretrain and captions do not apply")
        if config.get("stats", {}).get("reference_model") == name:
            raise BenchmarkError(f"config: stats.reference_model: {name} is an external model; the reference "
                                 "of the primary comparisons is trained under the shared budget")
        path = Path(entry["checkpoint"])
        publisher = hasattr(model_class(entry["method"]), "read_external")
        if is_hf_folder(path) and not publisher:
            raise BenchmarkError(f"{where}: {path}: {entry['method']} reads no Hugging Face folder as a checkpoint")
        if path.is_dir() and not is_hf_folder(path):
            if not is_benchmark_checkpoint(path):
                raise BenchmarkError(f"{where}: {path} is a folder without model.json or config.json (neither "
                                     "a checkpoint of this benchmark nor a Hugging Face folder)")
            spec = json.loads((path / "model.json").read_text())
            if (spec["method"], spec["preset"]) != (entry["method"], entry["preset"]):
                raise BenchmarkError(f"{where}: {path} holds {spec['method']}/{spec['preset']}, the entry says "
                                     f"{entry['method']}/{entry['preset']}")
            if not (path / "model.safetensors").is_file():
                raise BenchmarkError(f"{where}: {path} has no model.safetensors")
        elif not path.exists():
            raise BenchmarkError(f"{where}: {path} not found")
        elif not publisher:
            raise BenchmarkError(f"{where}: {path}: {entry['method']} reads no publisher's checkpoint format; "
                                 "give a checkpoint folder of this benchmark")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(entry: dict):
    """The external entry's model with its checkpoint's weights: a benchmark checkpoint folder
    as saved, a publisher's file through the method's ``read_external``; one line naming the
    file when its weights do not fit the model. Returns (model, context it was built with)."""
    from benchmark.checkpoint import load_checkpoint
    from benchmark.registry import build_model

    source = Path(entry["checkpoint"])
    if is_benchmark_checkpoint(source):
        return load_checkpoint(source), None
    context = dict(entry.get("overrides", {}))
    if entry.get("weights"):
        context["weights"] = entry["weights"]
    model = build_model(entry["method"], entry["preset"], **context)
    missing, unexpected = model.load_state_dict(model.read_external(source), strict=False)
    what = f"{entry['method']}/{entry['preset']}"
    if missing:
        raise BenchmarkError(f"{source}: lacks {len(missing)} of the {what} model's weights, e.g. {missing[0]}")
    if unexpected:
        raise BenchmarkError(f"{source}: {len(unexpected)} weights the {what} model does not have, e.g. {unexpected[0]}")
    return model, context


def check_external_formats(config: dict) -> int:
    """``check-config``'s deeper check: every external checkpoint read into its model (what the
    import job will do), so a file of the wrong format or architecture stops before any job.
    Returns how many were read (one the run writes itself is not there yet)."""
    names = [name for name in external_models(config["models"]) if not written_by_the_run(config, name)]
    for name in names:
        try:
            read_checkpoint(config["models"][name])
        except BenchmarkError as exc:
            raise BenchmarkError(f"config: models.{name}.checkpoint: {exc}") from None
    return len(names)


def import_checkpoint(config: dict, model_name: str, seed: int, out_dir: Path) -> dict:
    """The ``import-checkpoint`` command: the entry's checkpoint as this benchmark's checkpoint
    in ``out_dir``, and its ledger; returns the ledger."""
    from benchmark.checkpoint import TEXT_DIR, save_checkpoint
    from benchmark.tables import NOT_TRAINED_HERE

    if model_name not in config["models"]:
        raise BenchmarkError(f"config: models.{model_name}: no such model entry")
    check_external(config, [model_name])
    entry = config["models"][model_name]
    source = Path(entry["checkpoint"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, context = read_checkpoint(entry)
    if context is None:  # this benchmark's own checkpoint: copied as it is
        for name in ("model.json", "model.safetensors", "tokenizer.json"):
            if (source / name).is_file():
                shutil.copyfile(source / name, out_dir / name)
        if (source / TEXT_DIR).is_dir():
            shutil.copytree(source / TEXT_DIR, out_dir / TEXT_DIR, dirs_exist_ok=True)
        fmt = "benchmark checkpoint"
    else:
        save_checkpoint(model, out_dir, entry["method"], entry["preset"], context)
        fmt = f"{entry['method']} publisher format"
    ledger = {
        "method": entry["method"], "preset": entry["preset"], "seed": seed, "trained_here": False,
        "note": NOT_TRAINED_HERE, "source": str(source), "source_format": fmt,
        "source_sha256": file_sha256(source_file(entry)),
        "params_total": sum(p.numel() for p in model.parameters()),
        "samples_seen": None, "optimizer_steps": None, "flops": None, "device_seconds": None,
    }
    (out_dir / "ledger.json").write_text(json.dumps(ledger, indent=2) + "\n")
    print(f"import-checkpoint {model_name}: {source} ({fmt}) -> {out_dir}")
    return ledger
