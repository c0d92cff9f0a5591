"""The paper path rehearsed on a CPU: every paper preset from weights in each real format
(benchmark/test_weights.py), through the whole workflow of config/paper-smoke.yaml; then
the weights folder is moved away and everything is evaluated again from the checkpoints."""

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmark.config import check_weights, load_config
from benchmark.errors import BenchmarkError

REPO = Path(__file__).resolve().parents[1]
MODELS = {"mama", "glam", "clip", "convirt", "mgca", "medclip", "mammoclip", "random_init"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from benchmark.test_weights import make_test_weights

    out = tmp_path_factory.mktemp("weights") / "weights-smoke"
    make_test_weights(out)
    return out


def _smoke_config(tmp: Path, weights: Path) -> Path:
    config = yaml.safe_load((REPO / "config/paper-smoke.yaml").read_text())
    config["results"] = str(tmp / "results")
    for dataset in config["data"].values():
        dataset["root"] = str(tmp / "results" / "data" / Path(dataset["root"]).name)
    for entry in config["models"].values():
        if isinstance(entry.get("weights"), dict):
            entry["weights"] = {k: str(weights / Path(v).name) for k, v in entry["weights"].items()}
        elif entry.get("weights"):
            entry["weights"] = str(weights / Path(entry["weights"]).name)
    path = tmp / "paper-smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _snakemake(config: Path, *targets: str) -> str:
    run = subprocess.run(["snakemake", *targets, "--cores", "2", "--configfile", str(config)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run.stdout + run.stderr


def test_paper_smoke_config_names_every_weight_file_the_generator_writes(weights, tmp_path):
    config = load_config(_smoke_config(tmp_path, weights))
    check_weights(config)  # every path present and of its form
    assert {entry["preset"] for entry in config["models"].values()} == {"paper"}


@pytest.mark.slow
def test_paper_presets_run_the_whole_workflow_and_evaluate_from_checkpoints_alone(weights, tmp_path):
    config = _smoke_config(tmp_path, weights)
    _snakemake(config)  # table and figures
    out = tmp_path / "results"
    table = pd.read_csv(out / "table.csv", dtype={"fraction": str})
    assert set(table.model) == MODELS
    assert {"zeroshot", "zeroshot_prefixed", "linear_probe", "finetune"} <= set(table.protocol)
    history = pd.read_csv(out / "checkpoints/mama/seed0/metrics.csv")
    late = history.dropna(subset=["sla"])  # MaMA's late losses ran (separator added to the GPT-2 tokenizer)
    assert len(late) and (late[["ntxent", "clip_view2", "sla"]] > 0).all().all()
    mgca = pd.read_csv(out / "checkpoints/mgca/seed0/metrics.csv")
    assert (mgca["token"] > 0).all()  # attention maps came back from the Hugging Face BERT
    mammoclip = pd.read_csv(out / "checkpoints/mammoclip/seed0/metrics.csv")
    assert (mammoclip[["image_text", "image_image", "text_text"]] > 0).all().all()  # B5 on portrait images
    glam = pd.read_csv(out / "checkpoints/glam/seed0/metrics.csv")  # CC/MLO pairs, mega-patch contrasts
    assert (glam[["clip", "ntxent", "patch_position", "patch_same_position"]] > 0).all().all()
    assert (out / "figures").is_dir() and len(list((out / "figures").glob("*.png"))) > 5

    # the checkpoints carry every weight, config and tokenizer: evaluate again without the weights
    moved = weights.with_name("moved-away")
    weights.rename(moved)
    try:
        for folder in ("features", "predictions", "embeddings", "figures"):
            shutil.rmtree(out / folder)
        (out / "table.csv").unlink()
        before = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("model.safetensors")}
        log = _snakemake(config)
        assert "rule pretrain" not in log
        assert {p: p.stat().st_mtime_ns for p in before} == before
        again = pd.read_csv(out / "table.csv", dtype={"fraction": str})
        pd.testing.assert_frame_equal(again, table)  # the same numbers from the checkpoints alone
    finally:
        moved.rename(weights)


def test_the_disk_check_sizes_paper_models_without_reading_a_weight_file(weights, tmp_path):
    """benchmark/disk_space.py builds each entry on the meta device from the text folder's
    config.json and the image preset: the bytes of the model built with its weights; with
    the weights moved away after pretraining, the checkpoint's model.json gives the same."""
    from benchmark.checkpoint import save_checkpoint
    from benchmark.disk_space import model_sizes
    from benchmark.registry import build_model

    config = load_config(_smoke_config(tmp_path, weights))
    checkpoints = Path(config["results"]) / "checkpoints"
    weight_bytes = {}
    for name in ("mama", "mgca"):  # GPT-2 with an added separator token; BERT with eager attention
        entry = config["models"][name]
        context = dict(entry.get("overrides", {}), weights=entry["weights"])
        built = build_model(entry["method"], entry["preset"], **context)
        weight_bytes[name] = sum(p.numel() * p.element_size() for p in built.parameters())
        assert model_sizes(config, name)["weight_bytes"] == weight_bytes[name]
        save_checkpoint(built, checkpoints / name / "seed0", entry["method"], entry["preset"], context)
    (Path(config["results"]) / "logs" / "disk-check-sizes.json").unlink()  # built again, now from the checkpoints
    moved = weights.with_name("moved-away")
    weights.rename(moved)
    try:
        assert {name: model_sizes(config, name)["weight_bytes"] for name in weight_bytes} == weight_bytes
    finally:
        moved.rename(weights)


def test_check_config_names_the_model_and_file_of_a_bad_weights_path(weights, tmp_path):
    config = load_config(_smoke_config(tmp_path, weights))
    bad = {
        "missing image file": ("mgca", {"image": str(tmp_path / "nope.safetensors"), "text": str(weights / "Bio_ClinicalBERT")},
                               "models.mgca.weights.image: .*nope.safetensors not found"),
        "not safetensors": ("convirt", {"image": str(tmp_path / "fake.safetensors"), "text": str(weights / "Bio_ClinicalBERT")},
                            "models.convirt.weights.image: .*fake.safetensors is not a readable safetensors file"),
        "unknown format": ("clip", str(tmp_path / "weights.npz"), "models.clip.weights: .*unknown weights format"),
        "text not a folder": ("medclip", {"image": str(weights / "swin_tiny_patch4_window7_224.safetensors"),
                                          "text": str(weights / "resnet50.safetensors")},
                              "models.medclip.weights.text: .*is not a folder"),
        "text without tokenizer": ("mama", {"image": str(weights / "dinov2_vitb14_reg4.safetensors"),
                                            "text": str(tmp_path / "no-tokenizer")},
                                   "models.mama.weights.text: .*has no tokenizer"),
    }
    (tmp_path / "fake.safetensors").write_bytes(b"not a safetensors file at all")
    (tmp_path / "weights.npz").write_bytes(b"x")
    (tmp_path / "no-tokenizer").mkdir()
    shutil.copy(weights / "BioMedLM" / "config.json", tmp_path / "no-tokenizer" / "config.json")
    for model, value, message in bad.values():
        broken = yaml.safe_load(yaml.safe_dump(config))
        broken["models"][model]["weights"] = value
        with pytest.raises(BenchmarkError, match=message):
            check_weights(broken)


def test_models_lists_paper_presets_without_any_data(tmp_path):
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    config["data"]["embed"]["root"] = str(tmp_path / "absent")
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(["python", "-m", "benchmark", "models", "--config", str(path)], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "mama" in run.stdout and "paper:" in run.stdout


def test_hugging_face_dinov2_folder_loads_into_timm_with_equal_outputs(weights, tmp_path):
    import timm
    from transformers import AutoModel

    from benchmark.test_weights import SMOKE_IMAGE
    from models.weights import convert_to_timm, load_image_weights

    name, kwargs = SMOKE_IMAGE["dinov2_vitb14_reg4"]
    hf = AutoModel.from_pretrained(weights / "dinov2_vitb14_reg4_hf").eval()
    direct = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    load_image_weights(direct, str(weights / "dinov2_vitb14_reg4_hf"), "test")
    converted = timm.create_model(name, pretrained=False, num_classes=0, **kwargs).eval()
    convert_to_timm(weights / "dinov2_vitb14_reg4_hf", converted, tmp_path / "dinov2.safetensors")
    load_image_weights(converted, str(tmp_path / "dinov2.safetensors"), "test")
    images = torch.randn(2, 3, kwargs["img_size"], kwargs["img_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(pixel_values=images).last_hidden_state  # [CLS], 4 registers, patches; normed
        for model in (direct, converted):
            assert torch.allclose(model.forward_features(images), expected, atol=1e-5)
    assert expected.std() > 0.1
