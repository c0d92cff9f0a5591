"""The pre-flight disk check (benchmark/disk_space.py): what it estimates for each kind of
output, that it refuses a run on a file system with less free (a mocked free-space query,
and a whole workflow whose reserve no disk has), and that it lets a run that fits go on.
The estimate against what a real run wrote is checked in test_workflow.py."""

import json
import math
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
import yaml

from benchmark.config import load_config
from benchmark.datasets import DATASETS
from benchmark.disk_space import (
    CACHE_ASPECT,
    GIB,
    OTHER_BYTES,
    check_free_space,
    count_lines,
    dataset_images,
    estimate_outputs,
)
from benchmark.errors import BenchmarkError

REPO = Path(__file__).resolve().parents[1]
Usage = namedtuple("Usage", "total used free")


def _ci_config_file(tmp_path: Path) -> Path:
    """config/ci.yaml with its results and data in a fresh folder (nothing written yet)."""
    raw = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    raw["results"] = str(tmp_path / "results")
    for dataset in raw["data"].values():
        dataset["root"] = str(tmp_path / "results" / "data" / Path(dataset["root"]).name)
    path = tmp_path / "ci.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def config(tmp_path):
    return load_config(_ci_config_file(tmp_path), data=False)


def test_synthetic_data_and_cache_are_sized_from_the_generator_before_any_data_exist(config):
    R = config["results"]
    embed = config["data"]["embed"]
    outputs = [f"{embed['root']}/SYNTHETIC.json", f"{R}/cache/embed/manifest.csv"]
    totals = estimate_outputs(outputs, config)
    images = math.ceil(embed["synthetic"]["patients"] * DATASETS["embed"].synthetic_images_per_patient)
    assert dataset_images("embed", config) == images
    assert totals["synthetic data"] == images * embed["synthetic"]["rows"] * embed["synthetic"]["cols"] * 2
    side = config["preprocess"]["long_side"]
    assert totals["image cache"] == int(images * side * side * CACHE_ASPECT)  # 8 bits: a byte per pixel


def test_image_count_comes_from_the_manifest_then_the_main_table(config):
    R = Path(config["results"])
    table = Path(config["data"]["rsna"]["root"]) / config["data"]["rsna"]["table"]
    table.parent.mkdir(parents=True)
    table.write_text("site_id,patient_id,image_id\n" + "1,1,1\n" * 37)
    assert dataset_images("rsna", config) == 37
    manifest = R / "cache" / "rsna" / "manifest.csv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("image_id\n" + "x\n" * 11)
    assert dataset_images("rsna", config) == 11 and count_lines(manifest) == 12


def test_checkpoints_count_weights_and_the_resume_states_of_jobs_running_at_once(config):
    R = config["results"]
    outputs = [f"{R}/checkpoints/{m}/seed0/model.safetensors" for m in ("clip", "mama", "random_init")]
    one, two = (estimate_outputs(outputs, config, parallel_jobs=n)["checkpoints"] for n in (1, 2))
    sizes = json.loads(Path(R, "logs", "disk-check-sizes.json").read_text())  # built once per entry
    assert len(sizes) == 2  # clip and mama: random_init is clip's architecture untrained
    weights = sum(s["weight_bytes"] for s in sizes.values())
    assert one > weights and two > one  # a second resume state at once; random_init keeps none
    assert estimate_outputs(outputs[2:], config, parallel_jobs=8)["checkpoints"] < one  # untrained: weights only


def test_predictions_scale_with_classes_and_unknown_outputs_get_the_allowance(config):
    R = config["results"]
    density = estimate_outputs([f"{R}/predictions/embed/density/linear_probe_1/clip/seed0-draw0.csv"], config)
    birads = estimate_outputs([f"{R}/predictions/embed/birads/linear_probe_1/clip/seed0-draw0.csv"], config)
    assert birads["predictions"] > density["predictions"] > 0  # 7 classes against 4
    assert estimate_outputs([f"{R}/figures/bars.pdf"], config)["other"] == OTHER_BYTES


def test_a_file_system_with_less_free_than_the_estimate_stops_the_run_with_one_line(config):
    outputs = [f"{config['data']['embed']['root']}/SYNTHETIC.json"]
    need = sum(estimate_outputs(outputs, config).values())
    reserve = config["disk_reserve_gib"] * GIB
    small = lambda path: Usage(10 * GIB, 0, need + reserve - 1)  # noqa: E731
    with pytest.raises(BenchmarkError) as exc:
        check_free_space(outputs, config, disk_usage=small)
    message = str(exc.value)
    assert "\n" not in message and "disk_check=False" in message and "synthetic data" in message
    line = check_free_space(outputs, config, disk_usage=lambda path: Usage(10 * GIB, 0, need + reserve))
    assert line.startswith("disk check: the 1 outputs")


@pytest.mark.slow
def test_the_workflow_refuses_to_start_where_the_disk_is_too_small_and_writes_nothing(tmp_path):
    path = _ci_config_file(tmp_path)
    free_gib = shutil.disk_usage(tmp_path).free / GIB
    run = subprocess.run(["snakemake", "--cores", "2", "--configfile", str(path),
                          "--config", f"disk_reserve_gib={free_gib + 1:.0f}"],  # more than this disk has
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: disk check: the ")
    written = {p.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("*") if p.is_file()}
    stamps = {name for name in written if name.startswith("settings/")}  # the parse's settings hashes, 16 bytes each
    assert all((tmp_path / "results" / name).stat().st_size == 16 for name in stamps)
    assert written - stamps <= {"logs/disk-check-sizes.json", "logs/warm_start.log"}  # parameter counts, the server's log
    go_on = subprocess.run(["snakemake", "--cores", "2", "--configfile", str(path), "--config", "disk_check=False",
                            "--until", "synth"], capture_output=True, text=True, cwd=REPO)
    assert go_on.returncode == 0, go_on.stderr[-2000:]
