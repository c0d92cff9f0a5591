"""The workflow on a two-node SLURM cluster started on this machine
(tests/slurm/start_slurm.sh), through Snakemake's SLURM executor with the project's own
workflow/profiles/slurm: the ci workflow, a two-node pretraining job, and a pretraining job
requeued mid-run as preemption does. Runs where SLURM is installed (.ci/run installs it);
skipped elsewhere, saying why."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from tests.conftest import pretrain_cmd

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("sbatch") is None or shutil.which("slurmctld") is None,
                       reason="SLURM not installed (apt-get install slurm-wlm munge)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starting slurmctld and munged needs root"),
]
EXECUTOR = ["--workflow-profile", "workflow/profiles/slurm",
            "--slurm-no-account",  # this cluster has no accounting
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]


def _start_cluster() -> None:
    start = subprocess.run(["bash", "tests/slurm/start_slurm.sh"], capture_output=True, text=True, cwd=REPO)
    assert start.returncode == 0, start.stderr


def _ci_config(tmp_path: Path, models: tuple[str, ...]) -> dict:
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(tmp_path / "results")
    config["threads"] = 1  # two jobs at once on the two-core machine
    for dataset in config["data"].values():
        dataset["root"] = str(tmp_path / "results/data" / Path(dataset["root"]).name)
    config["models"] = {name: config["models"][name] for name in models}
    config["tasks"] = ["embed/density"]  # the fine-tuned task: no RSNA data to write and evaluate
    config["stats"]["reference_model"] = models[0]
    return config


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_ci_workflow_runs_through_the_slurm_executor(tmp_path):
    _start_cluster()
    config = _ci_config(tmp_path, ("clip", "random_init"))
    # Two models and one task keep the run short; every stage and rule still goes through SLURM.
    path = tmp_path / "ci-slurm.yaml"
    path.write_text(yaml.safe_dump(config))

    run = subprocess.run(["snakemake", f"{tmp_path}/results/table.csv", "--configfile", str(path), *EXECUTOR],
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


def test_a_two_node_pretraining_job_equals_torchrun_on_one_node(tmp_path):
    """pretrain.nodes 2 through the profile: one SLURM job on node1 and node2, one torchrun
    agent per node meeting at a c10d rendezvous (benchmark/launch.py), gloo between them.
    Two processes are two processes wherever they run: the checkpoint equals that of
    torchrun with two processes on one node, bit for bit; and, in fp32, that of one process
    on the same global batch within 1e-4 (all-reduced gradients are summed in another order,
    and Adam carries the difference for 8 steps: 5e-6 measured)."""
    _start_cluster()
    config = _ci_config(tmp_path, ("clip",))
    config["pretrain"] |= {"nodes": 2, "precision": "fp32"}
    path = tmp_path / "two-nodes.yaml"
    path.write_text(yaml.safe_dump(config))
    results = tmp_path / "results"
    target = results / "checkpoints/clip/seed0/model.safetensors"
    run = subprocess.run(["snakemake", str(target), "--configfile", str(path), *EXECUTOR],
                         capture_output=True, text=True, cwd=REPO, timeout=900)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    job = re.search(r"submitted with SLURM jobid (\d+) \(log: [^)]*/rule_pretrain/", log).group(1)
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert re.search(r"\bNodeList=node\[1-2\]", shown) and re.search(r"\bNumNodes=2\b", shown), shown
    pretrain_log = (results / "logs/pretrain/clip-seed0.log").read_text()
    assert "launch: srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in pretrain_log
    ledger = json.loads((results / "checkpoints/clip/seed0/ledger.json").read_text())
    assert ledger["nodes"] == 2 and ledger["processes"] == 2

    trainer = ["-m", "benchmark", "pretrain", "--config", str(results / "config.effective.yaml"), "--model", "clip",
               "--seed", "0", "--manifest", str(results / "cache/embed/manifest.csv"),
               "--split", str(results / "splits/embed.csv"), "--tokenizer", str(results / "tokenizer/tokenizer.json"),
               "--threads", "1"]
    for name, launcher in (("one-node", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc-per-node=2"]), ("one-process", [sys.executable])):
        local = subprocess.run([*launcher, *trainer, "--out-dir", str(tmp_path / name)], capture_output=True,
                               text=True, cwd=REPO, timeout=600)
        assert local.returncode == 0, local.stderr[-2000:]
    two_nodes = load_file(str(target))
    assert _same_weights(two_nodes, load_file(str(tmp_path / "one-node/model.safetensors")))
    one_process = load_file(str(tmp_path / "one-process/model.safetensors"))
    assert max(float((two_nodes[k] - one_process[k]).abs().max()) for k in one_process) < 1e-4

    # The same job on Snakemake's local executor is refused in one line, before any training.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    local = subprocess.run(["snakemake", str(target), "--configfile", str(path), "--cores", "2",
                            "--forcerun", "pretrain"], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert local.returncode != 0
    assert ("error: pretrain.nodes is 2: a multi-node training job runs only inside a SLURM allocation"
            in local.stdout + local.stderr)
    assert not target.exists()


def test_a_requeued_pretraining_job_saves_at_once_and_resumes_to_the_uninterrupted_weights(prepared, tmp_path):
    """Preemption as SLURM does it (scontrol requeue: SIGTERM to the job, then requeued; a
    partition with PreemptMode=REQUEUE takes the same path): the trainer saves at the step
    in progress and exits 75, the requeued job resumes from there, and the final weights
    equal an uninterrupted run's. A time limit ends the job instead of requeuing it: the
    profile's retries resubmit it, and the rerun resumes the same way
    (tests/test_trainer.py sends the signals directly)."""
    _start_cluster()
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    run = subprocess.run([sys.executable, *pretrain_cmd(prepared, "clip", straight)], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    _requeue_mid_run([sys.executable, *pretrain_cmd(prepared, "clip", requeued)], 1, requeued, tmp_path / "job.out")
    assert _same_weights(load_file(str(straight / "model.safetensors")), load_file(str(requeued / "model.safetensors")))


def test_a_requeued_two_node_job_resumes_to_the_uninterrupted_weights(prepared, tmp_path):
    """Preemption of a multi-node job: the job of benchmark/launch.py on node1 and node2 is
    requeued mid-run; every node's torchrun passes the SIGTERM on to its trainer, the state
    is saved at the step in progress, the requeued job starts both nodes again and resumes
    there, and the final weights equal two processes' uninterrupted run bit for bit."""
    _start_cluster()
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          *pretrain_cmd(prepared, "clip", straight)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    launch = [sys.executable, "-m", "benchmark.launch", "--nodes", "2", "--procs-per-node", "1",
              "--cpus-per-task", "1", "--", *pretrain_cmd(prepared, "clip", requeued)[2:]]
    shown = _requeue_mid_run(launch, 2, requeued, tmp_path / "job.out")
    assert re.search(r"\bNodeList=node\[1-2\]", shown), shown
    assert _same_weights(load_file(str(straight / "model.safetensors")), load_file(str(requeued / "model.safetensors")))


def _requeue_mid_run(command: list[str], nodes: int, out_dir: Path, out: Path) -> str:
    """Submit ``command`` as a --requeue job of ``nodes`` nodes, requeue it once its first
    periodic state exists, wait for it to finish; check that it saved at the step in
    progress and resumed there. Returns ``scontrol show job``."""
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "--open-mode=append", f"--nodes={nodes}",
                          f"--ntasks={nodes}", "--cpus-per-task=1", f"--output={out}", f"--chdir={REPO}",
                          f"--wrap=exec {' '.join(command)}"], capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.monotonic() + 600
    while not (out_dir / "resume/latest").exists():  # the first periodic state (step 2): training is under way
        assert time.monotonic() < deadline, out.read_text() if out.exists() else "the job never wrote a state"
        time.sleep(0.1)
    subprocess.run(["scontrol", "requeue", job], check=True)
    while not (out_dir / "model.safetensors").exists() or _job_state(job) not in ("COMPLETED", ""):
        assert time.monotonic() < deadline, out.read_text()
        if _job_state(job) == "PENDING":  # a requeued job waits about two minutes to start again; not here
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], capture_output=True)
        time.sleep(0.5)
    text = out.read_text()
    saved = int(re.search(r"preempted: SIGTERM at step (\d+); the state is saved", text).group(1))
    assert f"resume: step {saved} of" in text
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert re.search(r"\bRestarts=1\b", shown), shown
    assert not (out_dir / "resume").exists()
    return shown


def _job_state(job: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()
