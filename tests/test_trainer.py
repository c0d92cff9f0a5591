"""The shared trainer: data parallelism equals one process, a killed run resumes to the same
weights, the budget and the sampler are what they claim (docs/protocol.md, Pretraining)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from benchmark.distributed import Ranks
from benchmark.errors import BenchmarkError
from benchmark.precision import resolve_precision
from benchmark.registry import available_models
from benchmark.train import (
    RunOptions,
    StepSampler,
    global_batch_size,
    lr_for_steps,
    lr_for_time,
    step_indices,
)
from tests.conftest import pretrain_cmd

REPO = Path(__file__).resolve().parents[1]


def _torchrun(*args: str, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
@pytest.mark.parametrize("model", available_models())
def test_two_gloo_ranks_equal_one_process_on_the_global_batch(model, tokenizer, tmp_path):
    """Every method's loss and gradients under DDP with gathered negatives equal one process
    on the whole batch (MGCA's prototype term and Mammo-CLIP's four-way loss included)."""
    out = tmp_path / "ddp.json"
    _torchrun("tests/ddp_worker.py", "--model", model, "--tokenizer", tokenizer, "--out", str(out))
    result = json.loads(out.read_text())
    assert result["world"] == 2 and result["params_compared"] > 10 and not result["params_mismatched"]
    assert abs(result["loss"] - result["ref_loss"]) < 1e-5
    # relative to the largest gradient: summing in another order moves each gradient by a few
    # fp32 ulps of its size (GLAM: 1.2e-5 at a largest gradient of 10.1 on a Xeon without
    # AVX-512 BF16); a lost negative or a wrong gather moves them by orders of magnitude more
    assert result["grad_max_abs_diff"] < 1e-5 * max(1.0, result["grad_max_abs"])
    assert result["grad_max_abs"] > 1e-5


@pytest.mark.slow
def test_per_rank_negatives_switch_changes_the_loss(tokenizer, tmp_path):
    """gather_negatives: false (the official MaMA behaviour) contrasts each rank's half only."""
    out = tmp_path / "ddp.json"
    _torchrun("tests/ddp_worker.py", "--model", "mama", "--gather", "0", "--tokenizer", tokenizer, "--out", str(out))
    result = json.loads(out.read_text())
    assert result["loss"] < result["ref_loss"] - 0.5  # fewer negatives, easier task


# --- pretraining through the CLI: resume after kill -9, torchrun --------------------------

@pytest.mark.slow
def test_kill_9_then_rerun_ends_with_the_uninterrupted_weights(prepared, tmp_path):
    """MaMA crosses its late-loss start step (a change of loss terms) during the run."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run = subprocess.run([sys.executable, *pretrain_cmd(prepared, "mama", straight)], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]

    proc = subprocess.Popen([sys.executable, *pretrain_cmd(prepared, "mama", killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed / "resume/latest").exists() or "step-00000004" not in (killed / "resume/latest").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.safetensors").exists()

    rerun = subprocess.run([sys.executable, *pretrain_cmd(prepared, "mama", killed)], capture_output=True,
                           text=True, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resume: step" in rerun.stdout
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    ledger_a = json.loads((straight / "ledger.json").read_text())
    ledger_b = json.loads((killed / "ledger.json").read_text())
    for key in ("samples_seen", "optimizer_steps", "flops", "final_loss"):
        assert ledger_a[key] == ledger_b[key], key
    assert ledger_b["resumed"] and not (killed / "resume").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_schedulers_stop_signal_saves_at_once_and_the_rerun_ends_with_the_uninterrupted_weights(
        prepared, tmp_path, signum):
    """What SLURM does at a time limit or preemption (SIGTERM, or SIGUSR1 asked for with
    --signal): the step in progress finishes, the state is saved at that step (not at the
    last periodic checkpoint), the command exits 75 so the job is requeued or retried."""
    from benchmark.errors import PREEMPTED_EXIT

    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run = subprocess.run([sys.executable, *pretrain_cmd(prepared, "clip", straight)], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]

    proc = subprocess.Popen([sys.executable, *pretrain_cmd(prepared, "clip", stopped)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (stopped / "resume/latest").exists():  # the first periodic state (step 2): training is under way
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    os.kill(proc.pid, signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    saved = int(re.search(r"at step (\d+)", line).group(1))
    assert line.startswith(f"preempted: {signal.Signals(signum).name} at step") and "a rerun resumes" in line
    assert (stopped / "resume/latest").read_text().strip() == f"step-{saved:08d}"  # saved at the stop, at once
    assert not (stopped / "model.safetensors").exists()

    rerun = subprocess.run([sys.executable, *pretrain_cmd(prepared, "clip", stopped)], capture_output=True,
                           text=True, cwd=REPO)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resume: step {saved} of" in rerun.stdout
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(stopped / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert not (stopped / "resume").exists()


@pytest.mark.slow
def test_streamed_images_with_loader_workers_train_the_same_weights(prepared, tmp_path):
    """images.memory_gib 0 reads every image from the PNG cache in 2 loader processes."""
    base, config = prepared
    streamed_config = tmp_path / "streamed.yaml"
    streamed_config.write_text(yaml.safe_dump(yaml.safe_load(config.read_text())
                                              | {"images": {"memory_gib": 0, "loader_workers": 2}}))
    ledgers, weights = {}, {}
    for name, path in (("memory", config), ("streamed", streamed_config)):
        cmd = pretrain_cmd((base, path), "clip", tmp_path / name)
        run = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 0, run.stderr[-2000:]
        ledgers[name] = json.loads((tmp_path / name / "ledger.json").read_text())
        weights[name] = load_file(str(tmp_path / name / "model.safetensors"))
    assert not ledgers["memory"]["images_streamed"] and ledgers["memory"]["loader_workers"] == 0
    assert ledgers["streamed"]["images_streamed"] and ledgers["streamed"]["loader_workers"] == 2
    assert ledgers["memory"]["final_loss"] == ledgers["streamed"]["final_loss"]
    # the config leaves precision at auto; the ledger keeps the precision that ran here
    assert ledgers["memory"]["precision"] == resolve_precision("auto", torch.device("cpu"))
    a, b = weights["memory"], weights["streamed"]
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_pretrain_under_torchrun_with_two_cpu_processes(prepared, tmp_path):
    out = tmp_path / "ddp"
    _torchrun(*pretrain_cmd(prepared, "clip", out))
    ledger = json.loads((out / "ledger.json").read_text())
    assert ledger["processes"] == 2 and ledger["samples_seen"] == 64 * 9 and ledger["optimizer_steps"] == 9
    assert ledger["flops"] > 0 and np.isfinite(ledger["final_loss"])


# --- units -----------------------------------------------------------------------------

def test_step_indices_are_whole_batches_of_a_seeded_permutation():
    epoch0 = np.concatenate([step_indices(10, 3, seed=1, step=s)[1] for s in range(3)])
    assert len(set(epoch0)) == 9 and step_indices(10, 3, 1, 3)[0] == 1
    assert (step_indices(10, 3, 1, 4)[1] == step_indices(10, 3, 1, 4)[1]).all()
    assert not (step_indices(10, 3, 1, 0)[1] == step_indices(10, 3, 1, 3)[1]).all()


def test_ranks_and_micro_batches_partition_each_global_batch():
    keys = []
    for rank in (0, 1):
        sampler = iter(StepSampler(40, 8, seed=0, start_step=5, ranks=Ranks(rank, 2), grad_accum=2))
        keys += [next(sampler), next(sampler)]  # this rank's two micro-batches of step 5
    assert all(len(k) == 2 for k in keys)
    epoch, indices = step_indices(40, 8, 0, 5)
    assert [i for k in keys for _, i in k] == list(indices) and {e for k in keys for e, _ in k} == {epoch}


def test_a_multinode_job_is_srun_of_one_torchrun_per_node_meeting_on_the_first_node():
    from benchmark.launch import NotInAllocation, multinode_command

    command = multinode_command(2, 4, cpus_per_task=16, gpus_per_node=4, trainer_args=["pretrain", "--seed", "1"],
                                env={"SLURM_JOB_ID": "77"}, head="gpu-a01", port=29411)
    srun = command[:command.index(sys.executable)]
    assert srun == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=16",
                    "--kill-on-bad-exit=1", "--gpus-per-node=4"]
    torchrun = command[len(srun):]
    assert {"--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu-a01:29411",
            "--rdzv-id=benchmark-77"} <= set(torchrun)
    assert torchrun[-5:] == ["-m", "benchmark", "pretrain", "--seed", "1"]
    cpu = multinode_command(2, 1, 2, 0, ["pretrain"], {"SLURM_JOB_ID": "8"}, "n1", 1)
    assert not any(arg.startswith("--gpus") for arg in cpu)
    with pytest.raises(NotInAllocation, match="pretrain.nodes is 2: a multi-node training job runs only inside"):
        multinode_command(2, 1, 2, 0, ["pretrain"], {}, "n1", 1)


def test_the_launcher_outside_an_allocation_says_so_in_one_line_and_starts_nothing():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    run = subprocess.run([sys.executable, "-m", "benchmark.launch", "--nodes", "3", "--procs-per-node", "1",
                          "--cpus-per-task", "1", "--", "pretrain", "--model", "clip"],
                         capture_output=True, text=True, cwd=REPO, env=env)
    assert run.returncode == 2
    assert run.stdout.strip().splitlines() == [run.stderr.strip()]
    assert run.stdout.startswith("error: pretrain.nodes is 3: a multi-node training job runs only inside a SLURM")


def test_global_batch_must_split_evenly():
    assert global_batch_size(48, 1000, world=2, grad_accum=3) == 48
    assert global_batch_size(64, 30, world=2, grad_accum=1) == 30
    with pytest.raises(BenchmarkError, match="not divisible"):
        global_batch_size(48, 1000, world=5, grad_accum=1)


def test_schedule_warms_up_then_decays_to_zero():
    lrs = [lr_for_steps(s, 100, 10, 1.0) for s in range(101)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lr_for_time(0.5, 0.1, 1.0) == pytest.approx(0.5 * (1 + np.cos(np.pi * 0.4 / 0.9)))  # time budget


def test_run_options_from_config_zero_the_budget_of_an_untrained_control():
    section = {"dataset": "embed", "samples_seen": 100, "grad_accum": 2, "caption_mask_prob": 0.8}
    assert RunOptions.from_config(section).grad_accum == 2
    assert RunOptions.from_config(section, pretrain=False).samples_seen == 0


def test_paired_view_is_the_other_view_of_the_same_breast_else_the_image_itself():
    import pandas as pd
    import torch

    from benchmark.data.images import Augment
    from benchmark.train import PretrainDataset

    records = pd.DataFrame({"exam_id": ["e1"] * 4 + ["e2"], "breast_id": ["e1_L", "e1_L", "e1_R", "e1_R", "e2_L"],
                            "view": ["CC", "MLO", "CC", "XCCL", "CC"], "laterality": list("LLRRL")})
    images = torch.arange(5, dtype=torch.uint8).mul(50).view(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous()
    still = Augment(crop=False, hflip=False, vflip=False, jitter=0)
    data = PretrainDataset(records, images, still, 0.0, seed=0, needs=("image", "paired_view"))
    source = lambda item: round(float(item["paired_view"].mean()) * 255 / 50)  # noqa: E731 -- which image it is
    assert [source(data[(0, i)]) for i in range(5)] == [1, 0, 2, 3, 4]  # XCCL has no standard partner


def test_glam_pair_puts_cc_first_whichever_view_was_drawn_and_keeps_the_drawn_caption():
    import pandas as pd
    import torch

    from benchmark.data.captions import embed_sentences, join_sentences
    from benchmark.data.images import Augment
    from benchmark.train import AlignedViews, PretrainDataset
    from tests.conftest import REC

    views = [("e1_L", "CC"), ("e1_L", "MLO"), ("e1_R", "MLO"), ("e1_R", "XCCL"), ("e2_L", "MLO")]
    records = pd.DataFrame([REC | {"exam_id": b[:2], "breast_id": b, "view": v, "laterality": b[-1], "density": 1 + i % 4,
                                   "birads": i} for i, (b, v) in enumerate(views)])
    images = torch.arange(5, dtype=torch.uint8).mul(50).view(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous()
    still = Augment(crop=False, hflip=False, vflip=False, jitter=0)
    data = PretrainDataset(records, images, still, 0.0, seed=0, needs=("cc_view", "mlo_view", "caption"))
    source = lambda x: round(float(x.mean()) * 255 / 50)  # noqa: E731 -- which image it is
    items = [data[(0, i)] for i in range(5)]
    assert [(source(it["cc_view"]), source(it["mlo_view"])) for it in items] == [
        (0, 1), (0, 1),  # a CC/MLO pair, drawn either way round
        (2, 2), (3, 3),  # no standard partner: the drawn image twice (two augmentations)
        (4, 4)]
    assert [it["caption"] for it in items] == [join_sentences(embed_sentences(r)) for r in records.to_dict("records")]
    assert all("image" not in it for it in items)  # the drawn image is one of the pair, not a third tensor
    # the MLO rows' aligned images (align-mlo) replace theirs wherever they are drawn
    substitutes = torch.tensor([10, 30], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 4, 4).contiguous()
    aligned = PretrainDataset(records, images, still, 0.0, seed=0, needs=("cc_view", "mlo_view", "caption"),
                              aligned=AlignedViews([1, 4], substitutes))
    value = lambda x: round(float(x.mean()) * 255)  # noqa: E731 -- the pixel value: 50 x row, or a substitute's
    assert [(value(it["cc_view"]), value(it["mlo_view"])) for it in (aligned[(0, i)] for i in range(5))] == [
        (0, 10), (0, 10), (100, 100), (150, 150), (30, 30)]


def test_text_shuffled_control_takes_every_text_from_the_permuted_record():
    import numpy as np
    import pandas as pd
    import torch

    from benchmark.data.captions import embed_sentences, join_sentences
    from benchmark.data.images import Augment
    from benchmark.train import PretrainDataset
    from tests.conftest import REC

    records = pd.DataFrame([REC | {"exam_id": f"e{i}", "breast_id": f"e{i}_L", "density": 1 + i % 4, "birads": i % 7}
                            for i in range(6)])
    images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    still = Augment(crop=False, hflip=False, vflip=False, jitter=0)
    order = np.array([3, 4, 5, 0, 1, 2])
    own = PretrainDataset(records, images, still, 0.0, seed=0, needs=("image", "caption"))
    shuffled = PretrainDataset(records, images, still, 0.0, seed=0, needs=("image", "caption"), text_order=order)
    captions = [join_sentences(embed_sentences(r)) for r in records.to_dict("records")]
    assert [own[(0, i)]["caption"] for i in range(6)] == captions
    assert [shuffled[(0, i)]["caption"] for i in range(6)] == [captions[j] for j in order]


# --- an untrained control's batch-norm statistics -------------------------------------------

def test_batch_norm_statistics_of_an_untrained_model_are_the_images_averages():
    import torch
    import torch.nn as nn

    from benchmark.norm_statistics import estimate_batch_norm_statistics, unseen_batch_norms

    class ConvBN(nn.Module):
        """image_features: conv -> batch norm -> dropout (which the estimate must leave off)."""

        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.drop = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.9)
            self.loaded = nn.BatchNorm1d(4)  # statistics from "published weights": not re-estimated
            self.loaded.running_mean.fill_(3.0)

        def image_features(self, x):
            return self.drop(self.bn(self.conv(x))).mean(dim=(2, 3))

        def project_image(self, f):
            return self.loaded(f)

    torch.manual_seed(0)
    model = ConvBN().train()
    batches = [torch.randn(8, 1, 10, 10) * 2 + 5 for _ in range(3)]
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    assert unseen_batch_norms(model) == [model.bn]
    assert estimate_batch_norm_statistics(model, batches) == 1
    with torch.no_grad():
        conv = [model.conv(b) for b in batches]
    mean = torch.stack([c.mean(dim=(0, 2, 3)) for c in conv]).mean(0)  # equal batches: the images' mean
    var = torch.stack([c.var(dim=(0, 2, 3)) for c in conv]).mean(0)  # the batches' unbiased variances, averaged
    assert torch.allclose(model.bn.running_mean, mean, atol=1e-5) and torch.allclose(model.bn.running_var, var, atol=1e-4)
    assert model.bn.momentum == 0.1 and model.training and model.bn.training  # mode and momentum restored
    assert model.loaded.running_mean.eq(3.0).all() and int(model.loaded.num_batches_tracked) == 0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, weights[k])]
    assert sorted(changed) == ["bn.num_batches_tracked", "bn.running_mean", "bn.running_var"]  # no weight moved
    assert estimate_batch_norm_statistics(model, batches) == 0  # seen now: left alone
    model.eval()
    with torch.no_grad():  # in evaluation mode the layer now centres the images' features
        out = torch.cat([model.bn(c) for c in conv])
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4


@pytest.mark.slow
def test_an_untrained_control_is_saved_with_the_training_images_batch_norm_statistics(prepared, tmp_path):
    """``pretrain: false`` on a batch-norm architecture (ConVIRT's ResNet): no step, no weight
    moved from the seed's initialisation, the image path's batch norms estimated; a ViT has none."""
    import torch

    from benchmark.checkpoint import load_checkpoint
    from benchmark.registry import build_model

    base, config_path = prepared
    config = yaml.safe_load(config_path.read_text())
    config["models"] |= {"convirt_untrained": {"method": "convirt", "preset": "tiny", "pretrain": False},
                         "clip_untrained": {"method": "clip", "preset": "tiny", "pretrain": False}}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    ledgers = {}
    for model in ("convirt_untrained", "clip_untrained"):
        cmd = pretrain_cmd((base, config_path), model, tmp_path / model)
        run = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=REPO)
        assert run.returncode == 0, run.stderr[-2000:]
        ledgers[model] = json.loads((tmp_path / model / "ledger.json").read_text())
    assert ledgers["convirt_untrained"]["optimizer_steps"] == 0 and ledgers["convirt_untrained"]["norm_layers_estimated"] > 5
    assert ledgers["clip_untrained"]["norm_layers_estimated"] == 0
    saved = load_checkpoint(tmp_path / "convirt_untrained")
    torch.manual_seed(0)
    fresh = build_model("convirt", "tiny", tokenizer=str(base / "tokenizer.json"))
    state, init = saved.state_dict(), fresh.state_dict()
    statistics = [k for k in state if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics and all(not torch.equal(state[k], init[k]) for k in statistics if k.startswith("visual."))
    assert all(torch.equal(state[k], init[k]) for k in state if k not in statistics)
