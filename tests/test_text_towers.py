"""The tiny text towers: pretrained with their own language-model objective on training
captions only, written as Hugging Face folders, and loaded by the tiny presets through the
same text-weights path as the paper presets' downloaded models."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from benchmark.checkpoint import load_checkpoint, save_checkpoint
from benchmark.config import text_tower
from benchmark.data.captions import SEP, embed_sentences, join_sentences
from benchmark.registry import build_model
from benchmark.text_towers import SentencePairs, TowerTraining, pretrain_text_tower
from tests.conftest import REC, REPO

CAPTIONS = [join_sentences(embed_sentences(REC | {"density": d, "birads": b, "massshape": "X" if b > 3 else ""}))
            for d in (1, 2, 3, 4) for b in range(7)] * 3


@pytest.fixture(scope="module")
def towers(tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("towers")
    settings = TowerTraining(steps=60, batch_size=16, lr=2e-3, seed=0)
    return {name: (out / name, pretrain_text_tower(name, CAPTIONS, Path(tokenizer), settings, out / name))
            for name in ("bert_tiny", "gpt2_tiny")}


@pytest.mark.parametrize("name", ["bert_tiny", "gpt2_tiny"])
def test_a_tower_learns_its_language_model_objective_on_unseen_captions(towers, name):
    folder, summary = towers[name]
    assert summary["objective"] == ("masked+next_sentence" if name == "bert_tiny" else "causal")
    # random weights start at chance (ln vocabulary); training must at least halve the held-out loss
    assert summary["held_out_loss_before"] == pytest.approx(summary["chance_loss"], rel=0.1)
    assert summary["held_out_loss_after"] < 0.5 * summary["held_out_loss_before"]
    assert json.loads((folder / "tower.json").read_text())["train_loss"] == summary["train_loss"]


def test_next_sentence_pairs_cut_at_a_sentence_and_are_labelled_by_content():
    texts = [join_sentences(embed_sentences(REC | {"density": d, "birads": b})) for d in (1, 2, 3, 4) for b in (1, 4)]
    texts.append("Findings: none. [SEP] Impressions: negative. [SEP]")  # fewer sentences: never another's partner
    firsts, seconds, labels = SentencePairs(texts)(list(range(len(texts))) * 25, torch.Generator().manual_seed(0))
    for i, (first, second, label) in enumerate(zip(firsts, seconds, labels)):
        text = texts[i % len(texts)]
        assert first.endswith(SEP) and second.endswith(SEP) and text.startswith(first)
        continues = text == f"{first} {second}"
        assert label == (0 if continues else 1)
        if not continues:  # the rest of another caption with as many sentences, cut at the same sentence
            partners = [t for t in texts if t.count(SEP) == text.count(SEP) and t.endswith(second)]
            assert partners and all(t.count(SEP, 0, len(t) - len(second)) == first.count(SEP) for t in partners)
    assert 0.25 < sum(labels) / len(labels) < 0.5  # half draw another caption; some draw an equal tail


def test_the_bert_towers_next_sentence_task_trains_its_cls_state(tokenizer, tmp_path):
    """Where the second segment is predictable from the first (here: the same density
    sentence), the next-sentence task, read from the [CLS] state, is learned: the held-out
    loss falls well below the labels' entropy."""
    compositions = [embed_sentences(REC | {"density": d, "birads": 1})[4] for d in (1, 2, 3, 4)]
    texts = [f"{c} {SEP} {c} {SEP}" for c in compositions] * 60
    summary = pretrain_text_tower("bert_tiny", texts, Path(tokenizer),
                                  TowerTraining(steps=80, batch_size=32, lr=2e-3, seed=0), tmp_path)
    chance = summary["next_sentence_chance_loss"]
    assert 0.6 < chance <= math.log(2)  # about a third of the pairs are drawn from another caption of another density
    assert summary["held_out_next_sentence_loss_before"] == pytest.approx(chance, abs=0.1)
    assert summary["held_out_next_sentence_loss_after"] < 0.5 * chance


@pytest.mark.parametrize("method,name", [("convirt", "bert_tiny"), ("mgca", "bert_tiny"), ("mama", "gpt2_tiny")])
def test_a_tiny_preset_starts_from_its_tower_and_its_checkpoint_keeps_it(towers, tokenizer, method, name, tmp_path):
    folder, _ = towers[name]
    tower = load_file(str(folder / "model.safetensors"))
    model = build_model(method, "tiny", tokenizer=tokenizer, weights={"text": str(folder)})
    base = model.text.model.get_base_model() if hasattr(model.text.model, "get_base_model") else model.text.model
    key = "h.0.attn.c_attn.weight" if name == "gpt2_tiny" else "encoder.layer.0.attention.self.query.weight"
    state = {k.replace("base_layer.", ""): v for k, v in base.state_dict().items()}
    assert torch.equal(state[key], tower[key])  # the pretrained weights
    fresh = build_model(method, "tiny", tokenizer=tokenizer).text.model  # without the tower: a random init
    fresh = fresh.get_base_model() if hasattr(fresh, "get_base_model") else fresh
    fresh_state = {k.replace("base_layer.", ""): v for k, v in fresh.state_dict().items()}
    assert fresh_state[key].shape == tower[key].shape and not torch.equal(fresh_state[key], tower[key])
    ids, mask = model.text.tokenize(CAPTIONS[:2])
    assert ids.shape == (2, model.text.context_length)
    if method != "convirt":  # (ConVIRT reads one sentence at a time, in 48 tokens)
        assert model.text.context_length == 144 and mask[0].sum() < 144  # a whole report fits
    save_checkpoint(model, tmp_path, method, "tiny", {"tokenizer": tokenizer, "weights": {"text": str(folder)}})
    reloaded = load_checkpoint(tmp_path)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_text(CAPTIONS[:3]), reloaded.encode_text(CAPTIONS[:3]), atol=1e-6)


def test_which_models_start_from_a_tower():
    assert text_tower({"method": "mama", "preset": "tiny"}) == "gpt2_tiny"
    assert text_tower({"method": "medclip", "preset": "tiny"}) == "bert_tiny"
    assert text_tower({"method": "clip", "preset": "tiny"}) is None  # CLIP trains its text tower from scratch
    assert text_tower({"method": "mgca", "preset": "tiny", "weights": {"text": "my/bert"}}) is None
    assert text_tower({"method": "mgca", "preset": "paper"}) is None


def test_the_tower_corpus_holds_training_captions_only(tmp_path):
    """The text-tower command reads the split's training patients' captions, never a
    validation or test report."""
    from benchmark.data.steps import training_texts

    config = yaml.safe_load((REPO / "config/ci.yaml").read_text())
    config["data"] = {"embed": {"root": str(tmp_path / "embed"),
                                "synthetic": {"patients": 30, "rows": 128, "cols": 104, "seed": 5}}}
    config["tasks"] = ["embed/density"]
    config["results"] = str(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    bench = [sys.executable, "-m", "benchmark"]
    steps = (["synth", "--dataset", "embed", "--out", str(tmp_path / "embed")],
             ["preprocess", "--dataset", "embed", "--out-dir", str(tmp_path / "cache")],
             ["split", "--dataset", "embed", "--manifest", str(tmp_path / "cache/manifest.csv"),
              "--out", str(tmp_path / "split.csv")],
             ["tokenizer", "--manifest", str(tmp_path / "cache/manifest.csv"), "--split", str(tmp_path / "split.csv"),
              "--out", str(tmp_path / "tokenizer.json")])
    for args in steps:
        run = subprocess.run(bench + [args[0], "--config", str(path)] + args[1:], capture_output=True, text=True,
                             cwd=REPO)
        assert run.returncode == 0, run.stderr[-2000:]
    manifest = pd.read_csv(tmp_path / "cache/manifest.csv", dtype=str)
    split = pd.read_csv(tmp_path / "split.csv", dtype=str)
    texts = training_texts(tmp_path / "cache/manifest.csv", tmp_path / "split.csv")
    train_patients = set(split.loc[split.split == "train", "patient_id"])
    assert len(texts) == 2 * manifest.patient_id.isin(train_patients).sum()
    ages = {r.age for r in manifest.itertuples() if r.patient_id not in train_patients and str(r.age) != "nan"}
    train_ages = {r.age for r in manifest.itertuples() if r.patient_id in train_patients}
    assert ages - train_ages  # (this data set has such ages: the check below bites)
    for age in ages - train_ages:  # an age only held-out patients have never reaches the corpus
        assert not any(f"age {age}." in t for t in texts)
