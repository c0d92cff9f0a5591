# Config checks (before any job runs) and the path helpers every rules file uses.
import os
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from benchmark.config import (SCHEMA_PATH, check_weights, model_seeds, split_ratios, type_command_line_items,
                              validate_config)
from benchmark.data.preprocess import CACHE_FORMAT
from benchmark.data.synth import GENERATOR_VERSION
from benchmark.protocols import PROTOCOLS, generic_protocols
from benchmark.errors import BenchmarkError
from benchmark.external import check_external, external_models, source_file, written_by_the_run
from benchmark.norm_statistics import UNTRAINED_VERSION
from models.text_towers import TOWERS

type_command_line_items(config, workflow.config_settings.config)  # --config seeds=[0,1,2]: numbers, not strings
try:
    validate_config(config)  # one-line errors naming the key
except BenchmarkError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
validate(config, str(SCHEMA_PATH))  # snakemake's own check of the same schema

R = config["results"]


def _untrained(model):
    """Models with a seed still to pretrain (or import): only their weights paths are read by a job."""
    return any(not Path(f"{R}/checkpoints/{model}/seed{seed}/model.safetensors").exists()
               for seed in model_seeds(config, model))


try:  # every weights and external checkpoint path a job will read, before any job starts
    check_weights(config, [m for m in config["models"] if _untrained(m)])
    check_external(config, [m for m in external_models(config["models"]) if _untrained(m)
                            and not written_by_the_run(config, m)])
except BenchmarkError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)


CONFIGFILE = f"{R}/config.effective.yaml"


WARM_SERVER = []  # the warm-start server of this run, while it runs


onstart:  # in the main process only (spawned and cluster jobs run with --no-hooks)
    import yaml
    from pathlib import Path

    from benchmark.disk_space import DiskSpaceError, check_free_space
    from benchmark.warm import start_server

    # Jobs run on this machine fork from one process that imported torch & co once
    # (benchmark/warm.py); not for jobs submitted to SLURM or another executor, nor under
    # --sdm (conda, apptainer, env modules), whose jobs run in another environment.
    deployed = bool(workflow.deployment_settings.deployment_method)
    if config["warm_start"] and workflow.local_exec and not workflow.remote_exec and not deployed:
        WARM_SERVER.append(start_server(f"{R}/logs/warm_start.log", PYTHONPATH))
    if config["disk_check"]:  # before any job writes (benchmark/disk_space.py); the server starts meanwhile
        try:
            outputs = [f for job in workflow.dag.needrun_jobs() for f in job.output]
            parallel = workflow.nodes or workflow.cores  # --jobs (a cluster), else --cores
            print(check_free_space(outputs, config, parallel))
        except DiskSpaceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            _stop_warm_server()
            sys.exit(1)
        except Exception as exc:  # an estimate that fails must not stop a run that may fit: a job
            # that meets the same fault (e.g. a weights path) stops with its own one-line error
            print(f"warning: disk check skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
    # The commands read the config Snakemake resolved (files, --config overrides, schema
    # defaults). Written when jobs are about to run, never by a dry run or a parse.
    text = yaml.safe_dump(config, sort_keys=True)
    path = Path(CONFIGFILE)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _stop_warm_server():
    from benchmark.warm import stop_server

    while WARM_SERVER:
        stop_server(WARM_SERVER.pop())


onsuccess:
    _stop_warm_server()


onerror:
    _stop_warm_server()


def config_hash(*values):
    """A canonical hash of the config values a rule's results depend on. Rules pass it as a
    param, so Snakemake's params trigger reruns exactly the jobs whose settings changed
    (and, through their outputs, what depends on them)."""
    import hashlib
    import json

    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Snakemake compares each job's params (the hashes above) with the record it keeps in
# .snakemake/metadata; without that record (the folder deleted, or a results folder copied
# or moved) an edited setting would rerun nothing. So every rule's settings hash is also
# written to a stamp file, one of the inputs of its jobs, rewritten only when the hash
# changes: the newer stamp reruns them by Snakemake's modification-time rule, which needs
# no record. Only the main process of a real run writes stamps (a dry run writes nothing;
# a job's own Snakemake process, on SLURM or under --sdm, reads the same config). A stamp
# seen for the first time is dated 1970, so no output is made stale by its arrival.
WRITE_STAMPS = workflow.is_main_process and not workflow.output_settings.dryrun


def settings_stamp(name, digest):
    """The stamp file of the settings ``name`` (a rule, or a rule and its wildcard value),
    written at parse time, before Snakemake reads any modification time; none where a dry
    run meets settings no run has stamped yet (a missing input no rule makes would hide the
    new jobs from the dry run's plan; they have no outputs yet, so they run anyway)."""
    path = Path(R) / "settings" / f"{name}.txt"
    if WRITE_STAMPS:
        old = path.read_text() if path.exists() else None
        if old != digest:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(digest)
            if old is None:
                os.utime(path, (0, 0))
    return str(path) if path.exists() else []


def settings_stamps(rule, digests):
    """The stamp of each of a rule's wildcard values ({value: hash} -> {value: stamp})."""
    return {value: settings_stamp(f"{rule}-{value}", digest) for value, digest in digests.items()}


def without(section, *keys):
    """A config section less the keys that change only speed or resources, not results."""
    return {k: v for k, v in config.get(section, {}).items() if k not in keys}


def balance_by(dataset):
    """The split's balance column of a dataset as a list: empty when it has none, so adding
    one for a dataset leaves the other datasets' split hashes (and results) as they were."""
    column = config["split"].get("balance_by", {}).get(dataset)
    return [column] if column else []


def model_settings(model):
    """What a model's pretraining depends on: its entry, and the pretrain section unless the
    entry is an untrained control (``pretrain: false``; then what its job does, a version)."""
    entry = {k: v for k, v in config["models"][model].items() if k != "seeds"}  # a seed's own job is its wildcard
    if not entry.get("pretrain", True):
        return config_hash(entry, {"untrained_version": UNTRAINED_VERSION})
    return config_hash(entry, without("pretrain", "runtime_minutes", "mem_mb", "checkpoint_every", "threads"))


THREADS = config["threads"]
MODELS = list(config["models"])
EXTERNAL_MODELS = external_models(config["models"])  # evaluated only: imported, never pretrained
TRAINED_MODELS = [m for m in MODELS if m not in EXTERNAL_MODELS]
# The hand-crafted baseline (image_statistics.enabled): linear-probe rows on global image
# statistics, one replicate (seed 0), no pretraining and no other protocol.
BASELINES = ["image_statistics"] if config["image_statistics"]["enabled"] else []
SEEDS = config["seeds"]  # the run's; a model may add seeds of its own (models.<name>.seeds)
MODEL_SEEDS = {model: model_seeds(config, model) for model in MODELS}
FRACTIONS = config["split"]["fractions"]
DRAWS = config["split"]["draws"]
TASKS = config["tasks"]
# the pretraining dataset is read only when some model is trained here (not all external)
DATASETS = sorted({t.split("/")[0] for t in TASKS} | ({config["pretrain"]["dataset"]} if TRAINED_MODELS else set()))
PRETRAIN_DATASET = config["pretrain"]["dataset"]
PYTHONPATH = REPO + (":" + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
# `benchmark.warm` runs `python -m benchmark` in a fork of the warm-start server when one
# answers (see onstart), and in its own process otherwise.
BENCH = f"PYTHONPATH={shlex.quote(REPO)}${{PYTHONPATH:+:$PYTHONPATH}} python -m benchmark.warm"
# Every rule runs in this environment under `--sdm conda` (the dependencies; the code is
# this checkout, through BENCH's PYTHONPATH).
CONDA_ENV = "../envs/benchmark.yaml"


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),
    seed=r"\d+",
    task=r"[a-z]+",
    fraction=r"[0-9.]+",


def data_root(dataset):
    return config["data"][dataset]["root"]


def dataset_at(root):
    """The dataset whose data folder is ``root`` (the synth rule's wildcard)."""
    return next(d for d in config["data"] if data_root(d) == root)


def raw_marker(dataset):
    """What preprocess waits for: the synthetic data, or nothing for real data."""
    if "synthetic" in config["data"][dataset]:
        return f"{data_root(dataset)}/SYNTHETIC.json"
    return []


def manifest(dataset):
    return f"{R}/cache/{dataset}/manifest.csv"


def split_file(dataset):
    return f"{R}/splits/{dataset}.csv"


def checkpoint_dir(model, seed):
    return f"{R}/checkpoints/{model}/seed{seed}"


def needs_tokenizer(model):
    return config["models"][model]["preset"] == "tiny"


def aligned_mlo(model):
    """The align-mlo table of the pretraining dataset, for a model that trains on MLO views
    aligned to the CC orientation (``mlo_view`` in its batch_needs: GLAM), else none."""
    from benchmark.registry import model_class

    if "mlo_view" not in model_class(config["models"][model]["method"]).batch_needs:
        return []
    return f"{R}/cache/{PRETRAIN_DATASET}/mlo_to_cc.csv"


def tower_dir(tower):
    return f"{R}/text_towers/{tower}"


def text_tower_weights(model):
    """The pretrained text tower a model starts from (its preset's text.tower), or none."""
    from benchmark.config import text_tower

    tower = text_tower(config["models"][model])
    if tower and tower not in TOWERS:
        raise BenchmarkError(f"model {model}: text tower {tower!r} is not in models/text_towers.py ({', '.join(TOWERS)})")
    return [f"{tower_dir(tower)}/model.safetensors"] if tower else []


def fraction_label(fraction):
    return f"{float(fraction):g}"


def zeroshot_cells(task, model, seed):
    """(protocol, predictions file): the leakage-safe zero-shot, and MaMA's metadata-prefixed
    one on EMBED."""
    protocols = ["zeroshot"]
    if config["zeroshot"]["prefixed"] and task.startswith("embed/"):
        protocols.append("zeroshot_prefixed")
    return [(protocol, PROTOCOLS[protocol].predictions(R, task, model, seed)) for protocol in protocols]


def zeroshot_files(task, model, seed):
    return [path for _, path in zeroshot_cells(task, model, seed)]


def finetune_files(task, model, seed, every_task=False, fractions=None):
    """Fine-tune predictions per (fraction, draw), fraction-major as the probe's
    (``fractions``: a subset of finetune.fractions); ``every_task`` for the rule's output patterns."""
    if not config["finetune"]["enabled"]:
        return []
    if not every_task and task not in config["finetune"].get("tasks", TASKS):
        return []
    from benchmark.data.split import fraction_draws

    return [
        PROTOCOLS["finetune"].predictions(R, task, model, seed, f, d)
        for f in config["finetune"]["fractions"]
        if fractions is None or f in fractions
        for d in fraction_draws(f, DRAWS)
    ]


def probe_files(task, model, seed, fractions=None, protocol="linear_probe"):
    """One predictions file per (fraction, draw), fraction-major (the probe command's order);
    ``fractions``: a subset of split.fractions; ``protocol``: linear_probe, or
    linear_probe_fixed_c (the same cells at linear_probe.fixed_C; none when it is null)."""
    from benchmark.data.split import fraction_draws

    if protocol == "linear_probe_fixed_c" and not config["linear_probe"].get("fixed_C"):
        return []
    return [
        PROTOCOLS[protocol].predictions(R, task, model, seed, f, d)
        for f in FRACTIONS
        if fractions is None or f in fractions
        for d in fraction_draws(f, DRAWS)
    ]


GENERIC_PROTOCOLS = generic_protocols(config)


def protocol_files(protocol, task, model, seed, every_task=False, fractions=None):
    """Predictions of a generic protocol (benchmark/protocols.py with a run function) for
    one (task, model, seed): one per (fraction, draw) of its section's fractions (default
    split.fractions), fraction-major, or one; none for tasks outside its section's tasks."""
    from benchmark.data.split import fraction_draws

    section = config[protocol.name]
    if not every_task and task not in section.get("tasks", TASKS):
        return []
    if not protocol.fraction:
        return [protocol.predictions(R, task, model, seed)]
    return [
        protocol.predictions(R, task, model, seed, f, d)
        for f in section.get("fractions", FRACTIONS)
        if fractions is None or f in fractions
        for d in fraction_draws(f, DRAWS)
    ]


def cell_files(protocol, task, model, seed, fractions=None):
    """Predictions of one protocol for (task, model, seed): every (fraction, draw) of a
    fraction protocol, or those of ``fractions``; a zero-shot protocol's one file."""
    if protocol in ("zeroshot", "zeroshot_prefixed"):
        if not config["models"][model].get("pretrain", True):
            # An untrained control's image-text alignment is a random projection's: its
            # zero-shot "AUC" is that projection's sign (0.3 or 0.7 alike), so no table row.
            return []
        return [path for name, path in zeroshot_cells(task, model, seed) if name == protocol]
    if protocol in ("linear_probe", "linear_probe_fixed_c"):
        return probe_files(task, model, seed, fractions=fractions, protocol=protocol)
    if protocol == "finetune":
        return finetune_files(task, model, seed, fractions=fractions)
    return [path for p in GENERIC_PROTOCOLS if p.name == protocol
            for path in protocol_files(p, task, model, seed, fractions=fractions)]


# Every protocol a run may write predictions for, in the table's order; one the config
# leaves out has no files.
RUN_PROTOCOLS = ["zeroshot", "zeroshot_prefixed", "linear_probe", "linear_probe_fixed_c", "finetune",
                 *(p.name for p in GENERIC_PROTOCOLS)]


def prediction_files(fractions=None):
    """Every predictions file of the run (``fractions``: only these label fractions of the
    fraction protocols, and no fixed-C sensitivity row, e.g. [1.0] for the ROC figure)."""
    protocols = [p for p in RUN_PROTOCOLS if fractions is None or p != "linear_probe_fixed_c"]
    return [path for task in TASKS for model in MODELS for seed in MODEL_SEEDS[model] for protocol in protocols
            for path in cell_files(protocol, task, model, seed, fractions)] + baseline_files(protocols, fractions)


def baseline_files(protocols, fractions=None):
    """The hand-crafted baseline's predictions among ``protocols`` (its probe rows only)."""
    return [path for task in TASKS for model in BASELINES for protocol in protocols
            if protocol in ("linear_probe", "linear_probe_fixed_c")
            for path in cell_files(protocol, task, model, 0, fractions)]


def subgroup_files():
    """The predictions subgroups.csv reads: the cells of subgroups.cells."""
    return [path for cell in config["subgroups"]["cells"] for task in TASKS for model in MODELS
            for seed in MODEL_SEEDS[model]
            for path in cell_files(cell["protocol"], task, model, seed,
                                   None if cell.get("fraction") is None else [cell["fraction"]])] + [
        path for cell in config["subgroups"]["cells"]
        for path in baseline_files([cell["protocol"]], None if cell.get("fraction") is None else [cell["fraction"]])]
