# Config checks (before any job runs) and the path helpers every rules file uses.
import sys

from snakemake.utils import validate

from benchmark.config import SCHEMA_PATH, validate_config
from benchmark.errors import BenchmarkError

try:
    validate_config(config)  # one-line errors naming the key
except BenchmarkError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
validate(config, str(SCHEMA_PATH))  # snakemake's own check of the same schema

R = config["results"]


def _write_effective_config():
    """The commands read the config Snakemake resolved (files, --config overrides, defaults)."""
    import yaml
    from pathlib import Path

    path = Path(R) / "config.effective.yaml"
    text = yaml.safe_dump(config, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(path)


CONFIGFILE = _write_effective_config()
THREADS = config["threads"]
MODELS = list(config["models"])
SEEDS = config["seeds"]
FRACTIONS = config["split"]["fractions"]
TASKS = config["tasks"]
DATASETS = sorted({t.split("/")[0] for t in TASKS} | {config["pretrain"]["dataset"]})
PRETRAIN_DATASET = config["pretrain"]["dataset"]
BENCH = f"python -m benchmark"


wildcard_constraints:
    dataset="|".join(DATASETS),
    model="|".join(MODELS),
    seed=r"\d+",
    task=r"[a-z]+",
    fraction=r"[0-9.]+",


def data_root(dataset):
    return config["data"][dataset]["root"]


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


def fraction_label(fraction):
    return f"{float(fraction):g}"


def prediction_files():
    files = []
    for task in TASKS:
        for model in MODELS:
            for seed in SEEDS:
                files.append(f"{R}/predictions/{task}/zeroshot/{model}/seed{seed}.csv")
                for fraction in FRACTIONS:
                    files.append(
                        f"{R}/predictions/{task}/linear_probe_{fraction_label(fraction)}/{model}/seed{seed}.csv"
                    )
    return files
