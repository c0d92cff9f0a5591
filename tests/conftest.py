"""Shared fixtures: small synthetic datasets written once per test session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.data.captions import embed_sentences, join_sentences
from benchmark.data.synth import write_embed, write_rsna
from benchmark.data.tokenizer import train_tokenizer

REPO = Path(__file__).resolve().parents[1]
# One EMBED-like record: the fields captions need (tests vary density and BI-RADS).
REC = {"study_description": "MG Screening Bilateral", "reason": "screening", "age": "56", "race": "Asian",
       "ethnicity": "Unreported", "image_type": "2D", "laterality": "L", "view": "CC"}


@pytest.fixture(scope="session")
def embed_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("embed")
    write_embed(root, n_patients=24, seed=3, shape=(128, 104))
    return root


@pytest.fixture(scope="session")
def rsna_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rsna")
    write_rsna(root, n_patients=20, seed=4, shape=(128, 104))
    return root


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory) -> str:
    """A small BPE tokenizer on reports of every density and BI-RADS value."""
    texts = [join_sentences(embed_sentences(REC | {"density": d, "birads": b, "massshape": "X" if b > 3 else ""}))
             for d in (1, 2, 3, 4) for b in range(7)]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(texts, 400, path)
    return str(path)


# --- a small EMBED cache for pretraining runs (test_trainer, test_slurm) -------------------

@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small EMBED cache, split and tokenizer made with the project's own commands."""
    base = tmp_path_factory.mktemp("trainer")
    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["results"] = str(base)
    config["data"] = {"embed": {"root": str(base / "data/embed"),
                                "synthetic": {"patients": 30, "rows": 128, "cols": 104, "seed": 5}}}
    config["tasks"] = ["embed/density"]
    config["preprocess"] = {"long_side": 96}
    config["pretrain"] |= {"samples_seen": 48 * 12, "checkpoint_every": 2}
    config["models"]["mama"]["overrides"] = {"late_loss_start_step": 5}  # the loss terms change mid-run
    path = base / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    bench = [sys.executable, "-m", "benchmark"]
    for args in (["synth", "--dataset", "embed", "--out", str(base / "data/embed")],
                 ["preprocess", "--dataset", "embed", "--out-dir", str(base / "cache/embed")],
                 ["split", "--dataset", "embed", "--manifest", str(base / "cache/embed/manifest.csv"),
                  "--out", str(base / "split.csv")],
                 ["tokenizer", "--manifest", str(base / "cache/embed/manifest.csv"), "--split",
                  str(base / "split.csv"), "--out", str(base / "tokenizer.json")]):
        run = subprocess.run(bench + [args[0], "--config", str(path)] + args[1:], capture_output=True, text=True,
                             cwd=REPO)
        assert run.returncode == 0, run.stderr[-2000:]
    return base, path


def pretrain_cmd(prepared, model: str, out: Path) -> list[str]:
    base, config = prepared
    return ["-m", "benchmark", "pretrain", "--config", str(config), "--model", model, "--seed", "0",
            "--manifest", str(base / "cache/embed/manifest.csv"), "--split", str(base / "split.csv"),
            "--tokenizer", str(base / "tokenizer.json"), "--out-dir", str(out), "--threads", "1"]
