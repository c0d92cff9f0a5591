"""The capacity plan (benchmark/plan.py, benchmark/plan_measure.py): its arithmetic on given
measurements, the depth extrapolation of a language-model text tower, its warnings, and a
real measurement on this CPU whose memory fit holds at a batch it was not fitted on."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from benchmark.config import load_config
from benchmark.plan import GIB, GPUS, in_depth, plan

REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, models: dict, **pretrain) -> dict:
    raw = yaml.safe_load((REPO / "config/config.yaml").read_text())
    raw["results"] = str(tmp_path / "results")
    for dataset in raw["data"].values():
        dataset["root"] = str(tmp_path / "results" / "data" / Path(dataset["root"]).name)
    raw["models"] = models
    raw["stats"]["reference_model"] = next(iter(models))
    raw["pretrain"] |= pretrain
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, data=False)


def _fake_measure(per_layer: float = 0.0):
    """Measurements that are exact lines in the batch and, through ``per_layer``, in the text
    tower's depth (read from the spec's overrides), so every derived figure is known."""
    calls = []

    def fake(spec):
        calls.append(spec)
        layers = (spec["overrides"].get("text", {}).get("config") or {}).get("n_layer", 0)
        extra = per_layer * layers
        return {"loader_samples_per_s": 50.0, "flops_per_step": int(2 * (1e9 + extra)), "flops_batch": 2,
                "step_seconds": {"2": 0.5, "4": 0.9},
                "forward_bytes": {str(b): int(1e8 + b * (2e7 + extra)) for b in (2, 3, 4)},
                "forward_bytes_checkpointed": {str(b): int(1e8 + b * 1e6) for b in (2, 3, 4)},
                "step_bytes": {str(b): int(3e8 + b * 2e7) for b in (2, 3, 4)},
                "step_bytes_checkpointed": {str(b): int(3e8) for b in (2, 3, 4)}}

    return fake, calls


def test_gpu_hours_memory_and_cores_follow_from_the_measurements(tmp_path):
    config = _config(tmp_path, {"clip": {"method": "clip", "preset": "tiny"},
                                "clip_untrained": {"method": "clip", "preset": "tiny", "pretrain": False}},
                     gpus=2, samples_seen=6400)
    fake, calls = _fake_measure()
    table, warns, notes = plan(config, gpu="H100", mfu=0.5, cores_per_gpu=10**6, measure=fake)
    assert len(calls) == 1 and calls[0]["threads"] == config["pretrain"].get("threads", config["threads"])
    row = table.set_index("model").loc["clip"]
    assert "clip_untrained" not in set(table["model"])  # controls are not pretrained
    peak = GPUS["H100"].peak_tflops * 1e12
    assert row["gflop_per_sample"] == pytest.approx(1.0)
    assert row["pflop"] == pytest.approx(6400 * 1e9 / 1e15)
    assert row["gpu_hours"] == pytest.approx(6400 * 1e9 / (peak * 0.5) / 3600)
    assert row["wall_hours"] == pytest.approx(row["gpu_hours"] / 2)
    batch = 64  # clip tiny's preset batch, over 2 GPUs
    assert row["batch_per_gpu"] == batch // 2
    params = row["params_total_m"] * 1e6
    assert params == row["params_trainable_m"] * 1e6  # fp32: 4 bytes of weights + 12 of gradients and moments
    assert row["memory_gib"] * GIB == pytest.approx(16 * params + 1e8 + 32 * 2e7, rel=1e-6)
    assert row["memory_gib_checkpointed"] * GIB == pytest.approx(16 * params + 1e8 + 32 * 1e6, rel=1e-6)
    assert row["forward_fit_error_at_4"] == pytest.approx(0.0, abs=1e-9)
    assert row["loader_cores_per_gpu"] == pytest.approx(peak * 0.5 / 1e9 / 50.0)
    assert pd.isna(row["cpu_hours_here"])  # a GPU config: this CPU's hours mean nothing
    total = table.set_index("model").loc["total (2 seeds)"]
    assert total["gpu_hours"] == pytest.approx(2 * row["gpu_hours"])
    assert not warns and not notes


def test_a_model_with_seeds_of_its_own_counts_them_in_the_total(tmp_path):
    config = _config(tmp_path, {"clip": {"method": "clip", "preset": "tiny", "seeds": [0, 1, 2, 3]},
                                "convirt": {"method": "convirt", "preset": "tiny"}}, gpus=1)
    table, _, _ = plan(config, measure=_fake_measure()[0])
    rows = table.set_index("model")
    assert rows.loc["clip", "seeds"] == 4 and rows.loc["convirt", "seeds"] == 2
    expected = 4 * rows.loc["clip", "gpu_hours"] + 2 * rows.loc["convirt", "gpu_hours"]
    assert rows.loc["total (2 seeds)", "gpu_hours"] == pytest.approx(expected)


def test_a_language_model_tower_is_measured_at_one_and_eight_layers_and_extrapolated(tmp_path):
    # MaMA's paper preset: BioMedLM's 32 GPT-2 layers of width 2560 (2.7 B parameters)
    config = _config(tmp_path, {"mama": {"method": "mama", "preset": "paper"}}, gpus=4)
    fake, calls = _fake_measure(per_layer=1e6)
    table, _, _ = plan(config, measure=fake)
    assert [c["overrides"]["text"]["config"]["n_layer"] for c in calls] == [1, 8]
    row = table.set_index("model").loc["mama"]
    assert "1 and 8 of 32 layers" in row["measured"]
    assert row["gflop_per_sample"] * 1e9 == pytest.approx(1e9 + 32 * 1e6)  # the 32-layer value of the line
    assert row["params_total_m"] > 2500  # parameters are the full model's, built on the meta device
    assert "not found" in row["text_shape_from"] or "preset" in row["text_shape_from"]
    assert in_depth(3.0, 5.0, 1, 2, 32) == 65.0 and in_depth(3.0, 17.0, 1, 8, 32) == 65.0


def test_a_text_weights_folder_gives_the_planned_shape(tmp_path):
    folder = tmp_path / "BioMedLM-small"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"n_layer": 3, "n_embd": 64, "n_head": 2, "model_type": "gpt2"}))
    config = _config(tmp_path, {"mama": {"method": "mama", "preset": "paper", "weights": {"text": str(folder)}}})
    fake, calls = _fake_measure()
    table, _, _ = plan(config, measure=fake)
    row = table.set_index("model").loc["mama"]
    assert calls[0]["overrides"]["text"]["config"] == {"n_layer": 3, "n_embd": 64, "n_head": 2}
    assert row["measured"] == "whole model" and row["text_shape_from"] == f"{folder}/config.json"
    assert row["params_total_m"] < 200  # DINOv2 ViT-B and a 3-layer, 64-wide GPT-2


def test_what_does_not_fit_a_gpu_is_a_warning_naming_the_model_and_the_remedy(tmp_path):
    config = _config(tmp_path, {"clip": {"method": "clip", "preset": "tiny"}}, gpus=1)
    fake, _ = _fake_measure()

    def big(spec):  # 2 GiB more activations per sample; a slow loader
        return fake(spec) | {"forward_bytes": {"2": 0, "3": 2 * GIB, "4": 4 * GIB}, "loader_samples_per_s": 1.0}

    _, warns, _ = plan(config, gpu="H100", cores_per_gpu=14, measure=big)
    memory, cores = warns
    assert memory.startswith("clip: about 124.0 GiB per GPU at batch 64") and "79.6 GiB" in memory
    assert "pretrain.grad_checkpointing" in memory
    assert cores.startswith("clip: the loader needs about") and "more than the 14 given" in cores
    _, warns, _ = plan(config, gpu="H200", cores_per_gpu=10**9, measure=big)
    assert warns == []  # 124 GiB fits the H200's 140


def test_a_cpu_config_gets_a_note_not_gpu_warnings(tmp_path):
    config = _config(tmp_path, {"clip": {"method": "clip", "preset": "tiny"}})
    fake, _ = _fake_measure()
    table, warns, notes = plan(config, cores_per_gpu=1, measure=fake)
    assert warns == [] and "pretrain.gpus is 0" in notes[0]
    batch, samples = 64, config["pretrain"]["samples_seen"]  # clip tiny's batch; steps x the line in the batch
    assert table.loc[0, "cpu_hours_here"] == pytest.approx(samples / batch * (0.5 + (batch - 2) * 0.2) / 3600)


def test_a_real_measurement_fits_memory_linearly_and_counts_the_ledgers_flops(tmp_path):
    """plan_measure on this CPU: a ViT whose activations dominate (CLIP's tiny preset at a
    larger input). The forward growth is a line in the batch (the fit on 2 and 3 holds at 4
    within 15 %), checkpointing keeps less, and FLOPs are the trainer's counter's."""
    from torch.utils.flop_counter import FlopCounterMode

    spec = {"method": "clip", "preset": "tiny", "overrides": {"image_size": 160}, "threads": 1,
            "loader": {"long_side": 192, "bits": 8}}
    done = subprocess.run([sys.executable, "-m", "benchmark.plan_measure", json.dumps(spec)], capture_output=True,
                          text=True, cwd=REPO, check=True)
    m = json.loads(done.stdout.strip().splitlines()[-1])
    fwd, ckpt = m["forward_bytes"], m["forward_bytes_checkpointed"]
    assert fwd["2"] < fwd["3"] < fwd["4"]
    predicted = fwd["2"] + 2 * (fwd["3"] - fwd["2"])
    assert predicted == pytest.approx(fwd["4"], rel=0.15)
    # checkpointing keeps block inputs only: less at each batch. (Its growth from 2 to 3, a few
    # MB here, is within the allocator's noise: it exceeded the plain growth in 2 of 9 runs.)
    assert ckpt["2"] < 0.9 * fwd["2"] and ckpt["3"] < 0.9 * fwd["3"]
    assert m["step_bytes"]["4"] >= fwd["4"]
    assert m["loader_samples_per_s"] > 0 and m["step_seconds"]["4"] > 0
    # the same count as a step of the trainer's model at batch 2
    import torch

    from benchmark.data.images import image_hw
    from benchmark.perf.train import synthetic_records, synthetic_tokenizer
    from benchmark.precision import DEFAULT_PRECISION, precision_context
    from benchmark.registry import build_model
    from benchmark.train import PretrainDataset, model_collate

    torch.manual_seed(0)
    model = build_model("clip", "tiny", tokenizer=synthetic_tokenizer(tmp_path / "tok.json"), image_size=160)
    images = torch.randint(0, 256, (4, 1, *image_hw(160)), dtype=torch.uint8)
    data = PretrainDataset(synthetic_records(4), images, model.augment, 0.8, 0, model.batch_needs)
    batch = model_collate(model)([data[(0, i)] for i in range(2)])
    with FlopCounterMode(display=False) as counter, precision_context(torch.device("cpu"), DEFAULT_PRECISION):
        model.training_loss(batch | {"step": 10**9, "epoch": 1})["loss"].backward()  # as the trainer's step
    assert m["flops_per_step"] == counter.get_total_flops()


def test_the_plan_command_writes_plan_csv_without_data_or_weights(tmp_path):
    folder = tmp_path / "cfg"
    folder.mkdir()
    config = _config(folder, {"clip": {"method": "clip", "preset": "tiny"}})
    path = folder / "plan-config.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in config.items()}))
    done = subprocess.run([sys.executable, "-m", "benchmark", "plan", "--config", str(path)], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    written = pd.read_csv(Path(config["results"]) / "plan.csv")
    assert list(written["model"])[:1] == ["clip"] and written["model"].iloc[-1] == "total (2 seeds)"
    assert {"cache/embed", "cache/rsna", "cache/vindr"} <= set(written["model"])
    assert "GFLOP/sample" in done.stdout and "plan: " in done.stdout
    assert not (Path(config["results"]) / "data").exists()  # nothing read or written but the plan
    again = subprocess.run([sys.executable, "-m", "benchmark", "plan", "--config", str(path), "--mfu", "0.6"],
                           capture_output=True, text=True, cwd=REPO, check=True)
    halved = pd.read_csv(Path(config["results"]) / "plan.csv")
    assert halved["gpu_hours"].iloc[0] == pytest.approx(written["gpu_hours"].iloc[0] / 2)  # cached measurement
    assert again.returncode == 0
    bad = subprocess.run([sys.executable, "-m", "benchmark", "plan", "--config", str(path), "--mfu", "2"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: plan: --mfu 2.0 is not in (0, 1]"
    bad = subprocess.run([sys.executable, "-m", "benchmark", "plan", "--config", str(path), "--models", "mama"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: plan: --models mama: not a model this config "
                                                          "pretrains (clip)")
