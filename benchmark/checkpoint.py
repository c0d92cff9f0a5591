"""Checkpoints: weights as safetensors plus ``model.json`` saying how to rebuild the model.

A checkpoint is self-contained: evaluation reads nothing outside its folder. The state
dict holds every weight (the pretrained backbones' included), a trained BPE tokenizer is
copied in as ``tokenizer.json``, and a Hugging Face text encoder's config and tokenizer
(with any special tokens the method added) are saved under ``text/``; ``model.json`` refers
to them by relative path and drops the original weight paths.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmark.errors import BenchmarkError
from benchmark.registry import build_model

TEXT_DIR = "text"


def save_checkpoint(model: torch.nn.Module, out_dir: Path, method: str, preset: str, context: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stored_context = {k: v for k, v in context.items() if k != "weights"}
    if context.get("tokenizer"):
        shutil.copyfile(context["tokenizer"], out_dir / "tokenizer.json")
        stored_context["tokenizer"] = "tokenizer.json"
    text = getattr(model, "text", None)
    if context.get("weights") and getattr(text, "hf_tokenizer", None) is not None:
        text.save_architecture(out_dir / TEXT_DIR)
        stored_context["weights"] = {"text": TEXT_DIR}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = out_dir / "model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(out_dir / "model.safetensors")
    (out_dir / "model.json").write_text(json.dumps(
        {"method": method, "preset": preset, "context": stored_context}, indent=2, sort_keys=True) + "\n")


def build_from_checkpoint(ckpt_dir: Path) -> torch.nn.Module:
    """The checkpoint's model as ``model.json`` describes it, before its weights are loaded."""
    ckpt_dir = Path(ckpt_dir)
    spec_file = ckpt_dir / "model.json"
    if not spec_file.is_file():
        raise BenchmarkError(f"{ckpt_dir}: not a checkpoint (no model.json)")
    spec = json.loads(spec_file.read_text())
    context = dict(spec["context"])
    if context.get("tokenizer"):
        context["tokenizer"] = str(ckpt_dir / context["tokenizer"])
    if context.get("weights"):
        context["weights"] = {"text": str(ckpt_dir / context["weights"]["text"])}
    return build_model(spec["method"], spec["preset"], **context)


def load_checkpoint(ckpt_dir: Path) -> torch.nn.Module:
    model = build_from_checkpoint(ckpt_dir)
    model.load_state_dict(load_file(str(Path(ckpt_dir) / "model.safetensors")))
    return model.eval()
