"""A bad config fails before any job runs, with one line naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.config import load_config
from benchmark.errors import BenchmarkError

REPO = Path(__file__).resolve().parents[1]


def _ci_config(tmp_path) -> dict:
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    return config


BAD = [
    ("unknown model", lambda c: c["models"].update({"x": {"method": "nosuchmodel", "preset": "tiny"}}),
     "models.x.method"),
    ("missing data path", lambda c: c["data"]["rsna"].update(root="/nonexistent/rsna") or c["data"]["rsna"].pop("synthetic"),
     "data.rsna.root"),
    ("fraction above one", lambda c: c["split"].update(fractions=[0.1, 1.5]), "split.fractions.1"),
    ("fraction zero", lambda c: c["split"].update(fractions=[0.0, 1.0]), "split.fractions.0"),
    ("shell characters in a model name", lambda c: c["models"].update({"a;rm -rf": {"method": "clip", "preset": "tiny"}}),
     "models"),
    ("a model named as the settings stamp", lambda c: c["models"].update({"settings": {"method": "clip", "preset": "tiny"}}),
     "models"),
    ("a model's seeds without the run's", lambda c: c["models"]["random_init"].update(seeds=[1, 2]),
     "models.random_init.seeds"),
    ("seeds of an external checkpoint", lambda c: c["models"]["clip_reimported"].update(seeds=[0, 1]),
     "models.clip_reimported.seeds"),
    ("unknown preset", lambda c: c["models"]["clip"].update(preset="huge"), "models.clip.preset"),
    ("unknown key", lambda c: c.update(colour="blue"), "colour"),
    ("unknown subgroup metric", lambda c: c["subgroups"].update(metrics=["accuracy"]), "subgroups.metrics"),
    ("unknown subgroup protocol", lambda c: c["subgroups"].update(cells=[{"protocol": "probe"}]),
     "subgroups.cells.0.protocol"),
    ("subgroup fraction outside the split", lambda c: c["subgroups"].update(cells=[{"protocol": "linear_probe",
                                                                                  "fraction": 0.5}]),
     "subgroups.cells.0.fraction"),
    ("subgroups of an unknown dataset", lambda c: c["subgroups"].update(attributes={"embd": ["race"]}),
     "subgroups.attributes.embd"),
    ("balance column of an unknown dataset", lambda c: c["split"].update(balance_by={"rnsa": "site_id"}),
     "split.balance_by.rnsa"),
]


@pytest.mark.parametrize("name, mutate, key", BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_the_key(tmp_path, name, mutate, key):
    config = _ci_config(tmp_path)
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(BenchmarkError) as err:
        load_config(path)
    assert key in str(err.value) and "\n" not in str(err.value)

    # the command line prints that one line and exits non-zero
    cli = subprocess.run([sys.executable, "-m", "benchmark", "check-config", "--config", str(path)],
                         capture_output=True, text=True, cwd=REPO)
    assert cli.returncode != 0
    assert cli.stderr.strip().count("\n") == 0 and key in cli.stderr


@pytest.mark.parametrize("name, mutate, key", [BAD[0], BAD[1], BAD[2], BAD[4]], ids=[BAD[i][0] for i in (0, 1, 2, 4)])
def test_snakemake_stops_before_any_job(tmp_path, name, mutate, key):
    config = _ci_config(tmp_path)
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(["snakemake", "--cores", "1", "--configfile", str(path), "--dry-run"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("error: config:")]
    assert len(error_lines) == 1 and key in error_lines[0]
    assert not (tmp_path / "results" / "data").exists()


def test_paper_config_is_valid_and_asks_for_the_data():
    """config/paper.yaml passes the schema; without the data it stops naming the root."""
    from benchmark.config import check_schema

    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    check_schema(config)
    assert {m["preset"] for m in config["models"].values()} == {"paper"}
    with pytest.raises(BenchmarkError, match=r"data.embed.root: data/EMBED does not exist"):
        load_config(REPO / "config/paper.yaml")


def test_missing_paper_weights_name_the_path(tmp_path):
    from benchmark.registry import build_model

    with pytest.raises(BenchmarkError, match=r"weights/nowhere not found; put the Hugging Face model folder there"):
        build_model("medclip", "paper", weights={"text": "weights/nowhere"})
    with pytest.raises(BenchmarkError, match=r"nowhere.safetensors not found"):
        build_model("convirt", "paper", weights={"image": str(tmp_path / "nowhere.safetensors")})


def test_every_preset_has_typed_training_settings():
    from benchmark.presets import TrainSettings
    from benchmark.registry import available_models, model_class

    for name in available_models():
        for preset, values in model_class(name).presets.items():
            settings = TrainSettings.from_preset(values["train"], f"{name}/{preset}")
            assert settings.batch_size >= 1 and settings.optimizer in ("adamw", "adam")


@pytest.mark.parametrize("model, overrides, message", [
    ("clip", {"train": {"lr_peak": 1e-3}}, "train: lr_peak not a training setting"),  # the preset lacks it too
    ("clip", {"train": {"grad_clip_norm": -1.0}}, "train.grad_clip_norm: -1.0 is not a positive number or null"),
    ("clip", {"train": {"optimizer": "sgd"}}, "train.optimizer: 'sgd' is not 'adamw' or 'adam'"),
    ("clip", {"train": {"betas": [0.9]}}, "train.betas: [0.9] is not two numbers"),
    ("convirt", {"image": {"nme": "resnet_tiny"}}, "image: nme not a setting"),  # misspelt in a merged dict
    ("convirt", {"image": {"mean": [0.5]}}, "image.mean: [0.5] is not three numbers or null"),
    ("convirt", {"text": {"context_length": 1}}, "text.context_length: 1 is not a whole number of at least 2"),
    ("convirt", {"text": {"arch": "t5"}}, "text.arch: 't5' is not 'bert' or 'gpt2'"),
])
def test_overrides_are_checked_against_the_typed_settings(tmp_path, model, overrides, message):
    """Training settings and the dual encoders' towers, merged with the overrides: one line."""
    config = _ci_config(tmp_path)
    config["models"][model]["overrides"] = overrides
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(BenchmarkError, match=rf"models\.{model} \({model}/tiny\) "):
        try:
            load_config(path)
        except BenchmarkError as exc:
            assert message in str(exc) and "\n" not in str(exc), str(exc)
            raise


def test_every_dual_encoder_preset_reads_into_typed_towers():
    from benchmark.presets import ImageTower, TextTower
    from benchmark.registry import available_models, model_class

    read = 0
    for name in available_models():
        for preset, values in model_class(name).presets.items():
            for key, settings in getattr(model_class(name), "preset_types", {}).items():
                assert isinstance(settings.from_preset(values[key], f"{name}/{preset}"), (ImageTower, TextTower))
                read += 1
    assert read >= 16  # mama, convirt, mgca, medclip: two presets, two towers each


def test_command_line_lists_and_mappings_are_read_as_the_config_file_reads_them():
    """Snakemake hands the items of a --config list or mapping over as strings."""
    from benchmark.config import type_command_line_items

    config = {"seeds": ["0", "1", "2"], "results": "out", "finetune": {"steps": "80", "lr": "3e-4", "tasks": ["a/b"],
                                                                        "enabled": "true", "batch_size": 16}}
    given = {"seeds": ["0", "1", "2"], "results": "out", "finetune": {"steps": "80", "lr": "3e-4", "tasks": ["a/b"],
                                                                       "enabled": "true"}}
    type_command_line_items(config, given)
    assert config == {"seeds": [0, 1, 2], "results": "out", "finetune": {"steps": 80, "lr": 3e-4, "tasks": ["a/b"],
                                                                          "enabled": True, "batch_size": 16}}


def test_snakemake_takes_a_list_of_seeds_on_the_command_line(tmp_path):
    config = _ci_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(["snakemake", "--cores", "1", "--configfile", str(path), "--dry-run", "--config",
                          "seeds=[0,1,2]", "finetune={steps: 3}"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "seed2" in run.stdout + run.stderr
    bad = subprocess.run(["snakemake", "--cores", "1", "--configfile", str(path), "--dry-run", "--config",
                          "seeds=[0,x]"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "error: config: seeds.1: 'x' is not of type 'integer'" in bad.stderr
