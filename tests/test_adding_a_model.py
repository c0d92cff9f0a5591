"""docs/adding-a-model.md works as written: its file and config entry, dropped into a copy
of the project, run through the whole ci workflow with no other change to the code. The
config keeps only the reference model beside the new one (its deltas need the reference;
the other methods would only add minutes), and tests/test_workflow.py checks that adding
a model to the full config schedules only its own jobs."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", ".snakemake", "results*", "__pycache__", "*.egg-info",
                                ".pytest_cache", ".ruff_cache")


def _blocks(language: str) -> list[str]:
    text = (REPO / "docs/adding-a-model.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


@pytest.mark.slow
def test_tutorial_model_runs_through_the_ci_workflow(tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(REPO, copy, ignore=IGNORE)
    (copy / "models/siglip.py").write_text(_blocks("python")[0])
    entry = yaml.safe_load(_blocks("yaml")[0])
    config = yaml.safe_load((copy / "config/ci.yaml").read_text())
    reference = config["stats"]["reference_model"]
    config["models"] = {reference: config["models"][reference]} | entry
    config["image_statistics"] = {"enabled": False}  # only the reference beside the new model
    config["results"] = str(tmp_path / "results")
    for dataset in config["data"].values():
        dataset["root"] = str(tmp_path / "results/data" / Path(dataset["root"]).name)
    (copy / "config/ci.yaml").write_text(yaml.safe_dump(config))

    # No PYTHONPATH: `python -m` from the copy, and the copy's Snakefile, put the copy's
    # packages before the installed ones (the venv holds the original checkout, editable).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listing = subprocess.run(["python", "-m", "benchmark", "models"], capture_output=True, text=True, cwd=copy,
                             env=env)
    assert listing.returncode == 0 and "siglip" in listing.stdout, listing.stderr[-2000:]
    run = subprocess.run(["snakemake", f"{tmp_path}/results/table.csv", "--cores", "2", "--configfile",
                          "config/ci.yaml"], capture_output=True, text=True, cwd=copy, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/table.csv")
    assert set(table.model) == {reference, "siglip"}
    rows = table[table.model == "siglip"]
    assert set(zip(rows.dataset, rows.task)) == {tuple(task.split("/")) for task in config["tasks"]}
    assert set(rows.protocol) == {"zeroshot", "zeroshot_prefixed", "linear_probe", "linear_probe_fixed_c", "finetune",
                                  "knn"}  # every protocol config/ci.yaml runs, the generic k-NN included
    assert rows.delta_vs_ref.notna().all()  # compared with the reference model on the same resamples
    budget = pd.read_csv(tmp_path / "results/budget.csv").set_index("model")
    # the same budget as every other method, within one batch
    assert abs(budget.loc["siglip", "samples_seen"] - budget.loc[reference, "samples_seen"]) < \
        max(budget.loc["siglip", "batch_size"], budget.loc[reference, "batch_size"])
