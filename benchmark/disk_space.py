"""The pre-flight disk check: before the first job of a run, estimate what the jobs about to
run will write and stop with one line if the results folder's file system has less free.

The workflow's ``onstart`` hands over the output paths of the jobs that will run (finished
jobs are not counted again) and the estimate sorts them by the results layout
(docs/when-a-run-goes-wrong.md has the table):

- synthetic data: images x rows x cols x 2 bytes (uncompressed 16-bit DICOM, as written);
- the image cache: images x long_side x 0.82 long_side x bytes per pixel (the widest
  mammogram aspect the cache keeps, before PNG compression: an upper bound, 2 to 3 times
  the default run's compressed PNGs);
- checkpoints: the weights (every parameter at its dtype) plus the resumable state a
  pretraining job keeps while it trains (weights again and two Adam moments of the
  trainable parameters; deleted when it ends), for as many jobs as run at once;
- features: images x (feature + embedding dims) x 4 bytes plus the image ids;
- predictions: validation and test images x a row of ids and one score per class;
- anything else (tables, figures, sidecars): a fixed allowance per file.

Image counts come from the preprocessed manifest when there is one, else from the line
count of the dataset's main table (rows later excluded included: an upper bound), else,
for synthetic data not yet written, from the generator's expected images per patient.
Parameter counts come from building each model entry on the meta device (nothing is
allocated), kept in ``logs/disk-check-sizes.json`` by the hash of what decides the architecture (method,
preset, overrides, weights), so a rerun builds none.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from pathlib import Path

from benchmark.errors import BenchmarkError

GIB = 2**30
CACHE_ASPECT = 0.82  # EMBED's 3328 x 4096 detector; crops only make images narrower
PREDICTION_ROW_BYTES = 120  # dataset, task, protocol, ..., image/patient/breast ids, split, label
SCORE_BYTES = 12  # one score column, as written ("0.12345678,")
ID_BYTES = 256  # an image id in a features file (numpy unicode, 64 characters)
SIDECAR_BYTES = 4096  # the .json beside a predictions file
OTHER_BYTES = 2**20  # any other output: a table, a figure, a ledger


def count_lines(path: Path) -> int:
    """Newlines in a file, read in blocks (a table of a million rows takes a second)."""
    lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(2**24):
            lines += block.count(b"\n")
    return lines


def dataset_images(name: str, config: dict) -> int:
    """How many images a dataset has, from the best source that exists yet (module docstring)."""
    from benchmark.datasets import DATASETS

    entry = config["data"][name]
    manifest = Path(config["results"]) / "cache" / name / "manifest.csv"
    if manifest.exists():
        return max(count_lines(manifest) - 1, 0)
    table = Path(entry["root"]) / entry.get(DATASETS[name].main_table, "")
    if table.is_file():
        return max(count_lines(table) - 1, 0)
    synthetic = entry.get("synthetic")
    if synthetic:
        return math.ceil(synthetic["patients"] * DATASETS[name].synthetic_images_per_patient)
    return 0  # no table yet: the dataset's first job stops with its own one-line error


def model_sizes(config: dict, model: str) -> dict:
    """Total and trainable parameters, weight bytes and dims of a model entry, built on the
    meta device; cached by the entry's hash in the results folder."""
    entry = config["models"][model]
    architecture = {k: entry.get(k) for k in ("method", "preset", "overrides", "weights")}  # not pretrain, captions
    key = hashlib.sha256(json.dumps(architecture, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = Path(config["results"]) / "logs" / "disk-check-sizes.json"
    known = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in known:
        known[key] = _build_and_measure(entry, Path(config["results"]) / "checkpoints" / model)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known, indent=1, sort_keys=True))
        except OSError:  # a full or read-only disk: the check itself says so next
            pass
    return known[key]


def _build_and_measure(entry: dict, checkpoints: Path) -> dict:
    import torch

    from benchmark.checkpoint import build_from_checkpoint
    from benchmark.registry import build_on_meta

    context = dict(entry.get("overrides", {}))
    weights = entry.get("weights")
    if isinstance(weights, dict) and weights.get("text"):  # a Hugging Face folder's config.json shapes
        context["weights"] = {"text": weights["text"]}  # the text tower; image weights fill a preset's shape
    try:
        model = build_on_meta(entry["method"], entry["preset"], **context)
    except BenchmarkError:  # e.g. the weights moved away once the checkpoints hold everything
        saved = sorted(checkpoints.glob("seed*/model.json"))
        if not saved:
            raise
        with torch.device("meta"):
            model = build_from_checkpoint(saved[0].parent)
    params = list(model.parameters())
    return {"weight_bytes": sum(p.numel() * p.element_size() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
            "dims": int(getattr(model, "feature_dim", 0)) + int(getattr(model, "embed_dim", 0))}


def _n_classes(config: dict, dataset: str, task: str) -> int:
    from benchmark.datasets import DATASETS

    return next((t.n_classes for t in DATASETS[dataset].tasks if t.name == task), 2)


def estimate_outputs(outputs: list[str], config: dict, parallel_jobs: int = 1) -> dict[str, int]:
    """Bytes the given output paths will take, by kind (module docstring); ``parallel_jobs``:
    how many jobs run at once (that many resumable states can exist together)."""
    from benchmark.config import split_ratios

    results = Path(config["results"]).resolve()
    images = {}

    def n_images(dataset):
        if dataset not in images:
            images[dataset] = dataset_images(dataset, config)
        return images[dataset]

    roots = {Path(e["root"]).resolve(): name for name, e in config["data"].items()}
    resume_states = []
    totals = {"synthetic data": 0, "image cache": 0, "checkpoints": 0, "features": 0, "predictions": 0, "other": 0}
    for output in outputs:
        path = Path(output).resolve()
        rel = path.relative_to(results).as_posix() if path.is_relative_to(results) else None
        if path.name == "SYNTHETIC.json" and path.parent in roots:
            name = roots[path.parent]
            synthetic = config["data"][name]["synthetic"]
            totals["synthetic data"] += n_images(name) * synthetic["rows"] * synthetic["cols"] * 2
        elif rel and (m := re.fullmatch(r"cache/([^/]+)/(manifest|mlo_to_cc)\.csv", rel)):
            # the cached images; the aligned MLO views: at most one per image, none larger
            pre = config["preprocess"]
            side = pre["long_side"]
            totals["image cache"] += int(n_images(m[1]) * side * side * CACHE_ASPECT * (1 if pre["bits"] <= 8 else 2))
        elif rel and (m := re.fullmatch(r"checkpoints/([^/]+)/seed[^/]+/model\.safetensors", rel)):
            sizes = model_sizes(config, m[1])
            pretrained = config["models"][m[1]].get("pretrain", True)
            totals["checkpoints"] += sizes["weight_bytes"]
            if pretrained:
                resume_states.append(sizes["weight_bytes"] + 8 * sizes["trainable"])
        elif rel and (m := re.fullmatch(r"features/([^/]+)/seed[^/]+/([^/]+)\.npz", rel)) and m[2] in config["data"]:
            dims = model_sizes(config, m[1])["dims"] if m[1] in config["models"] else 16
            totals["features"] += n_images(m[2]) * (4 * dims + ID_BYTES)
        elif rel and (m := re.fullmatch(r"predictions/([^/]+)/([^/]+)/.+\.csv", rel)):
            ratios = split_ratios(config["split"], m[1])
            rows = n_images(m[1]) * (1 - ratios["train"])
            totals["predictions"] += int(rows * (PREDICTION_ROW_BYTES + SCORE_BYTES * _n_classes(config, m[1], m[2])))
        elif rel and rel.startswith("predictions/") and path.suffix == ".json":
            totals["other"] += SIDECAR_BYTES
        else:
            totals["other"] += OTHER_BYTES
    totals["checkpoints"] += sum(sorted(resume_states, reverse=True)[:max(parallel_jobs, 1)])
    return totals


class DiskSpaceError(BenchmarkError):
    """The results folder's file system has less free than the run needs: the run stops."""


def check_free_space(outputs: list[str], config: dict, parallel_jobs: int = 1, disk_usage=shutil.disk_usage) -> str:
    """One line with the estimate and the free space; a ``DiskSpaceError`` (one line) when the
    results folder's file system has less free than the estimate plus ``disk_reserve_gib``."""
    totals = estimate_outputs(outputs, config, parallel_jobs)
    need = sum(totals.values())
    where = Path(config["results"]).resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = disk_usage(where).free
    reserve = config["disk_reserve_gib"] * GIB
    parts = ", ".join(f"{kind} {size / GIB:.2f}" for kind, size in totals.items() if size)
    line = (f"disk check: the {len(outputs)} outputs to write need about {need / GIB:.2f} GiB ({parts}); "
            f"{free / GIB:.2f} GiB free on the file system of {where}")
    if free < need + reserve:
        raise DiskSpaceError(
            f"{line}, less than that plus the {reserve / GIB:g} GiB reserve (disk_reserve_gib): free space, "
            "point `results` elsewhere, or run with --config disk_check=False to go on anyway")
    record = Path(config["results"]) / "logs" / "disk-check.jsonl"  # a line per run: what each estimate said
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record, "a") as handle:
        handle.write(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "outputs": len(outputs),
                                 "parallel_jobs": parallel_jobs, "bytes": totals, "total_bytes": need,
                                 "free_bytes": free}) + "\n")
    return line
