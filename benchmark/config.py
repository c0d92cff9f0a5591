"""Load and check a benchmark config: the JSON schema, then what a schema cannot say.

Every failure is a ``BenchmarkError`` whose one-line message names the key, e.g.
``config: models.foo.method: unknown model 'foo' (registered: clip)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from benchmark.errors import BenchmarkError
from benchmark.prompts import load_prompts
from benchmark.protocols import generic_protocols
from benchmark.tasks import get_task

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(validator_class):
    """A validator that also fills in ``default`` values (as snakemake.utils.validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = sub["default"]
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def dataset_defaults(dataset: str) -> dict:
    """The schema's defaults for one ``data.<dataset>`` entry (table names, path prefix)."""
    properties = load_schema()["properties"]["data"]["properties"][dataset]["properties"]
    return {key: sub["default"] for key, sub in properties.items() if "default" in sub}


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def check_schema(config: dict) -> dict:
    validator = _with_defaults(jsonschema.Draft202012Validator)(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        if err.validator == "pattern" and err.validator_value.startswith("^[A-Za-z]") and not path:
            raise BenchmarkError(f"config: {err.message}")
        if err.validator == "propertyNames":  # a model name with shell or path characters
            raise BenchmarkError(f"config: {_key(path)}: invalid name {err.instance!r}: {err.message}")
        raise BenchmarkError(f"config: {_key(path)}: {err.message}")
    return config


def check_models(config: dict) -> None:
    """Every model entry names a registered method and one of its presets (imports ``models``)."""
    from benchmark.registry import available_models, preset_names, preset_values

    if "settings" in config["models"]:  # figure_alignment keys its inputs by model name, beside its "settings" stamp
        raise BenchmarkError("config: models.settings: 'settings' is a reserved name (the settings stamp among the "
                             "inputs of workflow/rules/figures.smk); rename the model")
    registered = available_models()
    for name, entry in config["models"].items():
        if entry["method"] not in registered:
            raise BenchmarkError(f"config: models.{name}.method: unknown model {entry['method']!r} "
                                 f"(registered: {', '.join(registered)})")
        if entry["preset"] not in preset_names(entry["method"]):
            raise BenchmarkError(f"config: models.{name}.preset: {entry['method']} has no preset "
                                 f"{entry['preset']!r} (presets: {', '.join(preset_names(entry['method']))})")
        preset = preset_values(entry["method"], entry["preset"])
        unknown = sorted(set(entry.get("overrides", {})) - set(preset))
        if unknown:
            raise BenchmarkError(f"config: models.{name}.overrides: {', '.join(unknown)} not in the "
                                 f"{entry['preset']} preset (keys: {', '.join(sorted(preset))})")
        check_override_types(entry.get("overrides", {}), preset, f"config: models.{name}.overrides")
        # the merged preset's typed entries (benchmark/presets.py): train, and the model's preset_types
        from benchmark.presets import TrainSettings
        from benchmark.registry import merge_settings, model_class

        merged = merge_settings(preset, entry.get("overrides", {}))
        types = {"train": TrainSettings, **getattr(model_class(entry["method"]), "preset_types", {})}
        for key, settings in types.items():
            if key in merged:
                settings.from_preset(merged[key], f"config: models.{name} ({entry['method']}/{entry['preset']}) {key}")


def split_ratios(split_cfg: dict, dataset: str) -> dict[str, float]:
    """A dataset's train / val / test shares: ``split.ratios_by_dataset.<dataset>``, else ``split.ratios``."""
    return split_cfg.get("ratios_by_dataset", {}).get(dataset, split_cfg["ratios"])


def text_tower(entry: dict) -> str | None:
    """The workflow-pretrained text tower (models/text_towers.py) a model entry starts from:
    its preset's ``text.tower``, unless the entry gives its own text ``weights``."""
    from benchmark.registry import merge_settings, preset_values

    weights = entry.get("weights")
    if isinstance(weights, dict) and weights.get("text"):
        return None
    merged = merge_settings(preset_values(entry["method"], entry["preset"]), entry.get("overrides", {}))
    text = merged.get("text")
    return text.get("tower") if isinstance(text, dict) else None


def model_controls(models: dict) -> tuple[list[str], dict[str, str]]:
    """The controls (untrained, ``pretrain: false``, or trained on shuffled captions), which
    stay out of the primary comparisons, and for each pretrained model its own untrained
    architecture: the untrained entry with the same method, preset and weights (among
    several, the one with the same overrides, else the first by name). Models without such
    an entry get no ``*_control`` columns."""
    untrained = sorted(name for name, entry in models.items() if not entry.get("pretrain", True))
    shuffled = sorted(name for name, entry in models.items() if entry.get("captions", "own") == "shuffled")
    control_of = {}
    for name, entry in sorted(models.items()):
        if name in untrained:
            continue
        same = [c for c in untrained if all(models[c].get(k) == entry.get(k) for k in ("method", "preset", "weights"))]
        exact = [c for c in same if models[c].get("overrides", {}) == entry.get("overrides", {})]
        if same:
            control_of[name] = (exact or same)[0]
    return sorted(set(untrained) | set(shuffled)), control_of


def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "null" if value is None else type(value).__name__


def check_override_types(overrides: dict, preset: dict, where: str) -> None:
    """Each override has the kind of the preset value it replaces (a number for a number, a
    list for a tuple, ...), checked into nested mappings; a preset value of None takes any.
    An integer preset value takes only whole numbers."""
    for key, value in overrides.items():
        if key not in preset or preset[key] is None:
            continue
        expected, path = preset[key], f"{where}.{key}"
        if isinstance(expected, dict) and isinstance(value, dict):
            check_override_types(value, expected, path)
            continue
        if _kind(value) != _kind(expected):
            raise BenchmarkError(f"{path}: {value!r} is {_kind(value)}, but the preset's value is "
                                 f"{_kind(expected)} ({expected!r})")
        if isinstance(expected, int) and not isinstance(expected, bool) and value != int(value):
            raise BenchmarkError(f"{path}: {value!r} is not a whole number (the preset's value is {expected!r})")


IMAGE_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")


def _check_weights_file(path: Path, where: str) -> None:
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BenchmarkError(f"{where}: {path} is a folder without config.json (not a Hugging Face model folder)")
        _check_hf_weights(path, where)
        return
    if not path.is_file():
        raise BenchmarkError(f"{where}: {path} not found")
    if path.suffix not in IMAGE_WEIGHT_SUFFIXES:
        raise BenchmarkError(f"{where}: {path}: unknown weights format (expected "
                             f"{', '.join(IMAGE_WEIGHT_SUFFIXES)} or a Hugging Face folder)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if not list(f.keys()):
                    raise BenchmarkError(f"{where}: {path} holds no tensors")
        except BenchmarkError:
            raise
        except Exception as exc:  # the header is not safetensors
            raise BenchmarkError(f"{where}: {path} is not a readable safetensors file ({exc})") from None


def _check_hf_weights(folder: Path, where: str) -> None:
    from models.encoders import HF_WEIGHT_FILES, has_weight_files

    if not has_weight_files(folder):
        raise BenchmarkError(f"{where}: {folder} has no weights (one of {', '.join(HF_WEIGHT_FILES)})")


def check_weights(config: dict, names: list[str] | None = None) -> None:
    """Every ``weights`` path of the model entries (``names``, default all) exists and has
    its form: an image backbone a state-dict file (safetensors header readable) or a Hugging
    Face folder, a text encoder a Hugging Face folder with config, tokenizer and weights.
    One line naming the model and the file."""
    for name in names if names is not None else list(config["models"]):
        weights = config["models"][name].get("weights")
        if not weights:
            continue
        slots = weights if isinstance(weights, dict) else {"image": weights}
        for slot, value in slots.items():
            where = f"config: models.{name}.weights.{slot}" if isinstance(weights, dict) else f"config: models.{name}.weights"
            path = Path(value)
            if slot == "text":
                if not path.is_dir():
                    raise BenchmarkError(f"{where}: {path} is not a folder (a Hugging Face model folder: "
                                         "config.json, tokenizer and weights)")
                if not (path / "config.json").is_file():
                    raise BenchmarkError(f"{where}: {path} has no config.json")
                if not any((path / t).is_file() for t in TOKENIZER_FILES):
                    raise BenchmarkError(f"{where}: {path} has no tokenizer ({', '.join(TOKENIZER_FILES)})")
                _check_hf_weights(path, where)
            else:
                _check_weights_file(path, where)


def model_seeds(config: dict, name: str) -> list[int]:
    """A model's pretraining seeds: its entry's own ``seeds`` (the run's and more), else the run's."""
    return config["models"][name].get("seeds", config["seeds"])


def check_model_seeds(config: dict) -> None:
    """A model's own seeds add to the run's (every comparison keeps the run's seeds; the
    figures show the first); an imported checkpoint is one checkpoint whatever the seed."""
    from benchmark.external import external_models

    external = set(external_models(config["models"]))
    for name, entry in config["models"].items():
        if "seeds" not in entry:
            continue
        if name in external:
            raise BenchmarkError(f"config: models.{name}.seeds: an external model is one checkpoint; "
                                 "it takes the run's seeds")
        missing = [s for s in config["seeds"] if s not in entry["seeds"]]
        if missing:
            raise BenchmarkError(f"config: models.{name}.seeds: must include every seed of seeds "
                                 f"(missing {', '.join(map(str, missing))}); a model's own seeds add to the run's")


def check_semantics(config: dict, data: bool = True) -> None:
    for key in config["tasks"]:
        try:
            get_task(*key.split("/"))
        except BenchmarkError as exc:
            raise BenchmarkError(f"config: tasks: {exc}") from None
    from benchmark.metrics import METRICS
    from benchmark.protocols import PROTOCOLS

    for k, spec in enumerate(config["stats"].get("primary", [])):
        if spec["protocol"] not in PROTOCOLS:
            raise BenchmarkError(f"config: stats.primary.{k}.protocol: {spec['protocol']!r} is not one of "
                                 f"{', '.join(PROTOCOLS)}")
        if spec["metric"] not in METRICS:
            raise BenchmarkError(f"config: stats.primary.{k}.metric: {spec['metric']!r} is not one of "
                                 f"{', '.join(METRICS)}")
        if spec.get("task") and spec["task"] not in config["tasks"]:
            raise BenchmarkError(f"config: stats.primary.{k}.task: {spec['task']!r} is not in tasks")
    ref = config["stats"].get("reference_model")
    if ref is not None and ref not in config["models"]:
        raise BenchmarkError(f"config: stats.reference_model: {ref!r} is not in models")
    check_model_seeds(config)
    # the pretraining (and tokenizer) dataset is read only when some model is trained here
    from benchmark.external import external_models

    trains = len(external_models(config["models"])) < len(config["models"])
    datasets = {t.split("/")[0] for t in config["tasks"]} | ({config["pretrain"]["dataset"]} if trains else set())
    for dataset in sorted(datasets):
        if dataset not in config["data"]:
            raise BenchmarkError(f"config: data.{dataset}: missing, but tasks or pretrain use it")
        entry = config["data"][dataset]
        if data and "synthetic" not in entry and not Path(entry["root"]).is_dir():
            raise BenchmarkError(f"config: data.{dataset}.root: {entry['root']} does not exist")
    if trains and config["tokenizer"]["dataset"] not in config["data"]:
        raise BenchmarkError(f"config: tokenizer.dataset: {config['tokenizer']['dataset']!r} is not in data")
    for key, ratios in [("split.ratios", config["split"]["ratios"])] + [
            (f"split.ratios_by_dataset.{d}", r) for d, r in config["split"].get("ratios_by_dataset", {}).items()]:
        if set(ratios) != {"train", "val", "test"} or abs(sum(ratios.values()) - 1) > 1e-6:
            raise BenchmarkError(f"config: {key}: train, val and test must all be given and sum to 1 "
                                 f"(they sum to {sum(ratios.values()):g})")
    for dataset in config["split"].get("balance_by", {}):
        if dataset not in config["data"]:
            raise BenchmarkError(f"config: split.balance_by.{dataset}: no such dataset in data "
                                 f"({', '.join(sorted(config['data']))})")
    results = Path(config["results"])
    if results.exists() and not results.is_dir():
        raise BenchmarkError(f"config: results: {results} exists and is not a folder")
    for task in config["tasks"]:  # every zero-shot prompt set, before any job
        load_prompts(Path(config["zeroshot"]["prompts"]), get_task(*task.split("/")))
    if 1.0 not in config["split"]["fractions"]:
        raise BenchmarkError("config: split.fractions: must include 1.0 (the full training set)")
    # the fine-tune's and every generic protocol's section: tasks and fractions within the run's
    for section in ["finetune"] + [p.name for p in generic_protocols(config)]:
        if not config[section]["enabled"]:
            continue
        if set(config[section].get("tasks", [])) - set(config["tasks"]):
            raise BenchmarkError(f"config: {section}.tasks: must be a subset of tasks")
        extra = sorted(set(config[section].get("fractions", [])) - set(config["split"]["fractions"]))
        if extra:
            raise BenchmarkError(f"config: {section}.fractions: {extra} not in split.fractions")
    check_subgroups(config)


def check_subgroups(config: dict) -> None:
    """subgroups: known protocols and metrics, fractions of the run, attributes of its datasets."""
    from benchmark.metrics import METRICS
    from benchmark.protocols import PROTOCOLS

    section = config["subgroups"]
    for k, cell in enumerate(section["cells"]):
        if cell["protocol"] not in PROTOCOLS:
            raise BenchmarkError(f"config: subgroups.cells.{k}.protocol: {cell['protocol']!r} is not one of "
                                 f"{', '.join(PROTOCOLS)}")
        if cell.get("fraction") is not None and cell["fraction"] not in config["split"]["fractions"]:
            raise BenchmarkError(f"config: subgroups.cells.{k}.fraction: {cell['fraction']} not in split.fractions")
    for name in section["metrics"]:
        if name not in METRICS:
            raise BenchmarkError(f"config: subgroups.metrics: {name!r} is not one of {', '.join(METRICS)}")
    from benchmark.datasets import DATASETS

    for dataset in section["attributes"]:  # a registered dataset the run does not use is simply not analysed
        if dataset not in DATASETS:
            raise BenchmarkError(f"config: subgroups.attributes.{dataset}: not a registered dataset "
                                 f"({', '.join(DATASETS)})")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, models: bool = True,
                data: bool = True) -> dict:
    """Read and check a config; ``models=False`` skips the registry check (and its imports),
    ``data=False`` the check that real data folders exist."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"config: {path} not found")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise BenchmarkError(f"config: {path}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        raise BenchmarkError(f"config: {path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise BenchmarkError(f"config: {path}: the top level must be a mapping of keys (results, data, models, ...), "
                             f"not a {type(config).__name__}")
    config.update(overrides or {})
    return validate_config(config, models=models, data=data)


def typed_value(text: str):
    """A value typed on a command line, read as the config file's YAML reads it, except that a
    number YAML 1.1 keeps as a string (3e-4) is a number."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and any(c.isdigit() for c in value):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def type_command_line_items(config: dict, command_line: dict) -> None:
    """Snakemake reads the items of a ``--config`` list or mapping with YAML's BaseLoader, as
    strings (``seeds=[0,1,2]`` gives ``['0', '1', '2']``); read them in ``config`` as the
    config file would. Top-level values Snakemake has already read as numbers or booleans."""

    def typed(value):
        if isinstance(value, dict):
            return {key: typed(item) for key, item in value.items()}
        if isinstance(value, list):
            return [typed(item) for item in value]
        return typed_value(value) if isinstance(value, str) else value

    def retype(target: dict, given: dict, top: bool) -> None:
        for key, value in given.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                retype(target[key], value, top=False)
            elif isinstance(value, (dict, list)) or (isinstance(value, str) and not top):
                target[key] = typed(value)

    retype(config, dict(command_line), top=True)


def validate_config(config: dict, models: bool = True, data: bool = True) -> dict:
    check_schema(config)
    for entry in config["models"].values():  # an external checkpoint this run writes itself
        if "{results}" in entry.get("checkpoint", ""):
            entry["checkpoint"] = entry["checkpoint"].replace("{results}", str(config["results"]))
    check_semantics(config, data=data)
    if models:
        check_models(config)
    return config
