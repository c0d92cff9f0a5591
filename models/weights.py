"""Image-backbone weights from local files, in the forms people have them.

- a timm state dict (``.safetensors``, or a torch file ``.pth``/``.pt``/``.bin``), with
  timm's key names (the original DINOv2 release's names work too: timm's own checkpoint
  filter renames them);
- a Hugging Face model folder (``config.json`` + weights), e.g. ``Dinov2WithRegisters``
  or ``Dinov2``, whose keys are translated to the original DINOv2 names and then put
  through timm's filter (register and class tokens, position embeddings resampled to the
  model's grid).

``python -m benchmark convert-weights HF_FOLDER OUT.safetensors`` writes the timm form once,
so a cluster job does not convert at every start.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

from benchmark.errors import BenchmarkError

TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def _hf_dinov2_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``Dinov2(WithRegisters)Model`` keys (old and new attention names) to the
    original DINOv2 release's keys, which timm's checkpoint filter understands."""
    out: dict[str, torch.Tensor] = {}
    renames = {
        "embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
        "embeddings.register_tokens": "register_tokens", "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    }
    layer_parts = {
        "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
        "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
        "attention.o_proj": "attn.proj", "attention.output.dense": "attn.proj",
    }
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("dinov2.")
        if key in renames:
            out[renames[key]] = value
            continue
        match = re.match(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$", key)
        if not match:
            continue  # e.g. a pooler or classifier head
        block, part, kind = match.groups()
        projection = re.fullmatch(r"attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)", part)
        if projection:
            name = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}.get(projection.group(1), projection.group(1))
            qkv.setdefault((block, kind), {})[name] = value
            continue
        full = f"{part}.{kind}" if kind == "lambda1" else part
        if full in layer_parts:
            target = layer_parts[full]
            out[f"blocks.{block}.{target}" + ("" if kind == "lambda1" else f".{kind}")] = value
    for (block, kind), parts in qkv.items():
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def read_hf_folder(folder: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """A Hugging Face image-model folder as a timm state dict for ``model``."""
    from timm.models.vision_transformer import checkpoint_filter_fn
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(str(folder))
    kind = type(hf).__name__
    if not kind.startswith("Dinov2"):
        raise BenchmarkError(f"{folder}: a Hugging Face {kind} folder; only DINOv2 folders convert "
                             "(give a timm state dict for other backbones)")
    return checkpoint_filter_fn(_hf_dinov2_to_original(hf.state_dict()), model)


def read_state_dict(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict at ``path`` (a file or a Hugging Face folder) in ``model``'s key names."""
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BenchmarkError(f"{path}: a folder without config.json is not a Hugging Face model folder")
        return read_hf_folder(path, model)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    elif path.suffix in TORCH_SUFFIXES:
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise BenchmarkError(f"{path}: unknown weights format (expected .safetensors, "
                             f"{', '.join(TORCH_SUFFIXES)} or a Hugging Face folder)")
    if "mask_token" in state or ("pos_embed" in state and hasattr(model, "reg_token")):
        from timm.models.vision_transformer import checkpoint_filter_fn

        # the original DINOv2 release's names, or a ViT state whose position grid differs
        state = checkpoint_filter_fn(state, model)
    return state


def load_image_weights(model: nn.Module, weights: str | None, what: str) -> None:
    """Load local weights (see the module docstring) into an image backbone; one error
    naming the file when it is missing or lacks some of the backbone's weights."""
    if not weights:
        return
    path = Path(weights)
    if not path.exists():
        raise BenchmarkError(f"{what}: weights {path} not found; put the backbone's state dict there "
                             "(safetensors, .pth or a Hugging Face folder) or remove `weights` to train "
                             "from random initialisation")
    state = read_state_dict(path, model)
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise BenchmarkError(f"{what}: {path} lacks {len(missing)} backbone weights, e.g. {missing[0]}")


def convert_to_timm(folder: Path, model: nn.Module, out: Path) -> int:
    """Write the Hugging Face ``folder`` as a timm safetensors file for ``model``; returns the
    number of tensors."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in read_hf_folder(Path(folder), model).items()}
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise BenchmarkError(f"{folder}: the converted weights lack {len(missing)} backbone weights, e.g. {missing[0]}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out))
    return len(state)


def convert_entry(config: dict, model_name: str, folder: Path, out: Path) -> None:
    """The ``convert-weights`` command: a Hugging Face DINOv2 folder as the timm state dict
    of a config model entry's image backbone."""
    from benchmark.registry import merge_settings, model_class
    from models.encoders import image_backbone

    if model_name not in config["models"]:
        raise BenchmarkError(f"convert-weights: models.{model_name}: no such model entry in the config")
    if not (Path(folder) / "config.json").is_file():
        raise BenchmarkError(f"convert-weights: {folder}: not a Hugging Face model folder (no config.json)")
    entry = config["models"][model_name]
    preset = merge_settings(model_class(entry["method"]).presets[entry["preset"]], entry.get("overrides", {}))
    if "image" not in preset:
        raise BenchmarkError(f"convert-weights: {entry['method']} builds its image encoder itself (no timm backbone)")
    backbone = image_backbone(preset["image"]["name"], preset["image_size"], **preset["image"].get("kwargs", {}))
    count = convert_to_timm(Path(folder), backbone, Path(out))
    print(f"convert-weights: {count} tensors for {preset['image']['name']} -> {out}")
