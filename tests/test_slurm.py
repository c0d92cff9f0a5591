"""The ci workflow through Snakemake's SLURM executor on a one-node SLURM started on this
machine (tests/slurm/start_slurm.sh), with the project's own workflow/profiles/slurm.
Runs where SLURM is installed (.ci/run installs it); skipped elsewhere, saying why."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sbatch") is None or shutil.which("slurmctld") is None,
                    reason="SLURM not installed (apt-get install slurm-wlm munge)")
@pytest.mark.skipif(os.geteuid() != 0, reason="starting slurmctld and munged needs root")
def test_ci_workflow_runs_through_the_slurm_executor(tmp_path):
    start = subprocess.run(["bash", "tests/slurm/start_slurm.sh"], capture_output=True, text=True, cwd=REPO)
    assert start.returncode == 0, start.stderr

    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["threads"] = 1  # two jobs at once on the two-core node
    for dataset in config["data"].values():
        dataset["root"] = str(tmp_path / "results/data" / Path(dataset["root"]).name)
    # Two models and one task keep the run short; every stage and rule still goes through SLURM.
    config["models"] = {name: config["models"][name] for name in ("clip", "random_init")}
    config["tasks"] = ["embed/density"]  # the fine-tuned task: no RSNA data to write and evaluate
    config["stats"]["reference_model"] = "clip"
    path = tmp_path / "ci-slurm.yaml"
    path.write_text(yaml.safe_dump(config))

    run = subprocess.run(
        ["snakemake", f"{tmp_path}/results/table.csv", "--configfile", str(path),
         "--workflow-profile", "workflow/profiles/slurm",
         "--slurm-no-account",  # this cluster has no accounting
         "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: [^)]*/(group_\w+|rule_\w+)/", log)
    kinds = {name.split("_")[0] + "_" + name.split("_")[1] for _, name in submitted}
    assert {"group_data", "rule_pretrain", "rule_image", "group_evaluate", "rule_table"} <= kinds, kinds
    table = pd.read_csv(tmp_path / "results/table.csv")
    # ci.yaml enables the image-statistics baseline, so its probe rows join the two models'.
    assert set(table.model) == {"clip", "random_init", "image_statistics"}
    assert table.value.between(0, 1).all()
    ledger = pd.read_csv(tmp_path / "results/budget.csv").set_index("model")
    assert ledger.loc["clip", "samples_seen"] >= 512
