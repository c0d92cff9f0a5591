"""CLIP (Radford et al. 2021) through open_clip: symmetric InfoNCE (the two directions
averaged), learnable logit scale initialised at ln(1/0.07) and clamped to [0, ln 100] after
every optimizer step, as open_clip's training loop does. AdamW (0.9, 0.98), eps 1e-6, no
weight decay on gains, biases and the logit scale; augmentation as open_clip's training
transform (random resized crop, scale 0.9 to 1, nothing else); images normalised with
open_clip's (OpenAI) statistics. Constants per source: docs/protocol.md.

``tiny``: a small ViT and text transformer built with open_clip's own classes, a BPE
tokenizer trained on the training captions. ``paper``: open_clip's ViT-B-16 and its
tokenizer; weights from the local file named by ``weights`` in the config (random
initialisation when none is given).

Released checkpoints (``read_external``): any open_clip checkpoint file, read by open_clip's
own ``load_checkpoint`` into the architecture ``open_clip_name`` names; or a Hugging Face
``CLIPModel`` folder (OpenAI's CLIP and its fine-tunes), its names translated to open_clip's,
when its activation and its tokenizer are those of that architecture (both checked).
"""

from __future__ import annotations

import math
from pathlib import Path

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from benchmark.data.images import Augment
from benchmark.data.tokenizer import load_tokenizer
from benchmark.errors import BenchmarkError
from benchmark.registry import register_model
from models.losses import ClipLoss

OPEN_CLIP_AUGMENT = dict(crop_scale=(0.9, 1.0), hflip=False, vflip=False, jitter=0)


@register_model("clip")
class Clip(nn.Module):
    image_text_term = "clip"  # the term pretraining is judged against chance by
    batch_needs = ("image", "caption")
    presets = {
        "tiny": dict(
            image_size=96, embed_dim=128,
            vision=dict(layers=4, width=192, head_width=64, patch_size=16),
            text=dict(layers=2, width=96, heads=4, context_length=144),  # trained from scratch, as CLIP
            train=dict(batch_size=64, lr=5e-4, weight_decay=0.1, warmup_fraction=0.1, eps=1e-6),
            augment=OPEN_CLIP_AUGMENT,
        ),
        "paper": dict(
            image_size=224, open_clip_name="ViT-B-16", open_clip_cfg={},
            train=dict(batch_size=256, lr=5e-4, weight_decay=0.2, warmup_fraction=0.05, eps=1e-6),
            augment=OPEN_CLIP_AUGMENT,
        ),
    }

    def __init__(self, *, image_size: int, train: dict, augment: dict, embed_dim: int | None = None,
                 vision: dict | None = None, text: dict | None = None, open_clip_name: str | None = None,
                 open_clip_cfg: dict | None = None, tokenizer: str | None = None, weights: str | None = None):
        """``open_clip_cfg``: values replacing the open_clip model config (e.g. smaller towers)."""
        super().__init__()
        self.image_size = image_size
        self.train_settings = dict(train)
        self.augment = Augment(**augment)
        init_scale = math.log(1 / 0.07)
        if open_clip_name:
            if weights and not Path(weights).is_file():
                raise BenchmarkError(f"clip paper weights: {weights} not found; put the open_clip "
                                     f"{open_clip_name} checkpoint there or remove `weights`")
            self.clip = open_clip.create_model(open_clip_name, pretrained=weights or None,
                                               device=torch.get_default_device(), **(open_clip_cfg or {}))
            self._tokenize = open_clip.get_tokenizer(open_clip_name)
            self.open_clip_name = open_clip_name
        else:
            self._tokenizer = load_tokenizer(tokenizer, text["context_length"]) if tokenizer else None
            vocab = self._tokenizer.get_vocab_size() if self._tokenizer else text.get("vocab_size", 2000)
            text_cfg = CLIPTextCfg(**{k: v for k, v in text.items() if k != "vocab_size"}, vocab_size=vocab,
                                   pad_id=0, eos_id=2, pool_type="eos")
            vision_cfg = CLIPVisionCfg(**vision, image_size=image_size)
            self.clip = open_clip.CLIP(embed_dim, vision_cfg, text_cfg, init_logit_scale=init_scale)
            self._tokenize = self._tokenize_bpe
            self.open_clip_name = None
        self.clip.logit_scale.data.fill_(init_scale)
        self.image_mean = tuple(getattr(self.clip.visual, "image_mean", None) or OPENAI_DATASET_MEAN)
        self.image_std = tuple(getattr(self.clip.visual, "image_std", None) or OPENAI_DATASET_STD)
        self.loss_fn = ClipLoss()
        self.feature_dim = self.clip.visual.ln_post.normalized_shape[0]
        self._pooled = None
        self.clip.visual.ln_post.register_forward_hook(self._keep_pooled)

    def _tokenize_bpe(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            raise BenchmarkError("clip tiny preset needs a trained tokenizer (run the tokenizer step)")
        return torch.tensor([enc.ids for enc in self._tokenizer.encode_batch(texts)], dtype=torch.long)

    def _keep_pooled(self, module, inputs, output):
        self._pooled = output[:, 0] if output.ndim == 3 else output

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project_image(self.image_features(images)), dim=-1)

    def project_image(self, features_nf: torch.Tensor) -> torch.Tensor:
        proj = self.clip.visual.proj
        return features_nf @ proj if proj is not None else features_nf

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        device = self.clip.logit_scale.device
        return F.normalize(self.clip.encode_text(self._tokenize(texts).to(device)), dim=-1)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled ViT token after the final norm, before the projection."""
        self.clip.encode_image(images)
        return self._pooled

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.clip.set_grad_checkpointing(enable)

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        self.clip.logit_scale.clamp_(0, math.log(100))

    def training_loss(self, batch: dict) -> dict:
        image_nd = self.encode_image(batch["image"])
        text_nd = self.encode_text(batch["caption"])
        loss = self.loss_fn(image_nd, text_nd, self.clip.logit_scale.exp())
        return {"loss": loss, "clip": loss.detach(), "logit_scale": self.clip.logit_scale.detach().exp()}

    def chance_losses(self, candidates: int) -> dict[str, float]:
        return {"clip": self.loss_fn.chance(candidates)}

    def read_external(self, path) -> dict[str, torch.Tensor]:
        """An open_clip checkpoint file (a state dict, or open_clip's training checkpoint, read
        by open_clip's own loader) or a Hugging Face ``CLIPModel`` folder as this model's
        state dict; needs an open_clip architecture (``open_clip_name``) to read it into."""
        if self.open_clip_name is None:
            raise BenchmarkError(f"{path}: an open_clip checkpoint needs an open_clip architecture: set "
                                 "overrides.open_clip_name (e.g. ViT-B-16) on a clip paper preset")
        if Path(path).is_dir():
            return {f"clip.{k}": v for k, v in self._read_hf_clip(Path(path)).items()}
        try:
            open_clip.load_checkpoint(self.clip, str(path), strict=True)
        except RuntimeError as exc:  # missing, unexpected or mis-shaped keys
            lines = str(exc).strip().splitlines()
            detail = lines[1].strip() if len(lines) > 1 else lines[0]  # the first mismatched key
            raise BenchmarkError(f"{path}: does not fit open_clip's {self.open_clip_name} ({detail})") from None
        return self.state_dict()

    def _read_hf_clip(self, folder: Path) -> dict[str, torch.Tensor]:
        """A Hugging Face ``CLIPModel`` folder as an open_clip state dict for ``self.clip``."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        config = AutoConfig.from_pretrained(folder)
        if config.model_type != "clip":
            raise BenchmarkError(f"{folder}: a Hugging Face {config.model_type} folder; only CLIPModel folders convert")
        quick = config.vision_config.hidden_act == "quick_gelu"
        if quick != isinstance(self.clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU):
            variant = "its -quickgelu variant" if quick else "a variant without -quickgelu"
            raise BenchmarkError(f"{folder}: its activation is {config.vision_config.hidden_act}, open_clip's "
                                 f"{self.open_clip_name} uses {'GELU' if quick else 'QuickGELU'}; name {variant} "
                                 "in overrides.open_clip_name")
        texts = ["no mammographic evidence of malignancy.", "Mass, right breast: BI-RADS 4 (suspicious)."]
        theirs = AutoTokenizer.from_pretrained(folder)(texts)["input_ids"]
        ours = [row[row != 0].tolist() for row in self._tokenize(texts)]
        if [list(t) for t in theirs] != ours:
            raise BenchmarkError(f"{folder}: its tokenizer is not open_clip's {self.open_clip_name} tokenizer "
                                 "(their ids differ on the same text)")
        return hf_clip_to_open_clip(AutoModel.from_pretrained(folder).state_dict())


_HF_BLOCK = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
_HF_TOP = {"vision_model.embeddings.class_embedding": "visual.class_embedding",
           "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
           "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
           "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding", "logit_scale": "logit_scale"}
_HF_NORMS = {"vision_model.pre_layrnorm": "visual.ln_pre", "vision_model.post_layernorm": "visual.ln_post",
             "text_model.final_layer_norm": "ln_final"}


def hf_clip_to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ``CLIPModel`` keys to open_clip's ``CLIP`` (the inverse of transformers'
    conversion script): q, k and v projections joined into ``in_proj``, the projections
    transposed into open_clip's parameters."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif key in ("visual_projection.weight", "text_projection.weight"):
            out["visual.proj" if key.startswith("visual") else "text_projection"] = value.T
        elif key.rpartition(".")[0] in _HF_NORMS:
            module, _, param = key.rpartition(".")
            out[f"{_HF_NORMS[module]}.{param}"] = value
        elif ".encoder.layers." in key:
            tower, rest = key.split(".encoder.layers.")
            index, part = rest.split(".", 1)
            module, _, param = part.rpartition(".")
            prefix = f"{'visual.' if tower == 'vision_model' else ''}transformer.resblocks.{index}"
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((prefix, param), {})[module[-6]] = value
            else:
                out[f"{prefix}.{_HF_BLOCK[module]}.{param}"] = value
        elif not key.endswith("position_ids"):
            raise BenchmarkError(f"Hugging Face CLIP key {key!r} has no open_clip counterpart")
    for (prefix, param), parts in qkv.items():
        out[f"{prefix}.attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out
