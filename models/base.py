"""What every dual-encoder method shares: backbones, projections to the joint space, the
model contract (encode_image, encode_text, image_features, logit_scale) and presets' run
settings. A method subclasses it, names its presets, pools text its own way and defines
``training_loss``; nothing method-specific lives here."""

from __future__ import annotations

import abc
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.data.images import HALF, Augment
from benchmark.data.text_augment import TextAugment
from benchmark.presets import ImageTower, TextTower
from models.encoders import TextEncoder, image_backbone
from models.weights import load_image_weights


def split_weights(weights) -> tuple[str | None, str | None]:
    """``weights`` in the config: one path (image backbone) or {image: path, text: path}."""
    if isinstance(weights, dict):
        return weights.get("image"), weights.get("text")
    return weights, None


_LAYERS_KEY = {"bert": "num_hidden_layers", "gpt2": "n_layer"}  # Hugging Face's name for the depth


class DualEncoder(nn.Module, abc.ABC):
    batch_needs: tuple[str, ...] = ("image", "caption")
    image_text_term: str | None = None  # the training_loss term that contrasts images with their texts
    preset_types = {"image": ImageTower, "text": TextTower}  # preset entries read into typed settings

    def __init__(self, *, image_size: int, train: dict, augment: dict, image: dict, text: dict, embed_dim: int,
                 tokenizer: str | None = None, weights=None, learnable_scale: bool = True,
                 init_logit_scale: float = math.log(1 / 0.07), text_augment: dict | None = None):
        super().__init__()
        self.image_size = image_size
        self.train_settings = dict(train)
        self.augment = Augment(**augment)
        self.text_augment = TextAugment(**text_augment) if text_augment else None  # captions, in pretraining
        image_weights, text_weights = split_weights(weights)
        name = type(self).__name__
        image = ImageTower.from_preset(image, f"{name} preset image")
        text = TextTower.from_preset(text, f"{name} preset text")
        self.visual = image_backbone(image.name, image_size, **image.kwargs)
        load_image_weights(self.visual, image_weights, f"{name} image backbone")
        self.text = TextEncoder(text.arch, text.context_length, tokenizer=tokenizer, weights=text_weights,
                                config=text.config, special_tokens=text.special_tokens,
                                what=f"{name} text encoder", layers=text.layers)
        # the statistics the image backbone was pretrained with (timm's pretrained_cfg), or the
        # preset's own; mean = std = 0.5 for the tiny presets' from-scratch backbones
        cfg = getattr(self.visual, "pretrained_cfg", None) or {}
        self.image_mean = tuple(image.mean or cfg.get("mean", HALF))
        self.image_std = tuple(image.std or cfg.get("std", HALF))
        self.feature_dim = self.visual.num_features
        self.embed_dim = embed_dim
        scale = torch.tensor(float(init_logit_scale))
        if learnable_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    # --- the contract -------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone feature for probing and fine-tuning (pooled, before any projection)."""
        return self.visual(images)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project_image(self.image_features(images)), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.project_text(*self.text_hidden(texts)), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass (timm and Hugging Face backbones)."""
        self.visual.set_grad_checkpointing(enable)
        if enable:
            self.text.model.gradient_checkpointing_enable()
        else:
            self.text.model.gradient_checkpointing_disable()

    # --- the capacity plan (benchmark/plan.py) ------------------------------------------------
    @classmethod
    def text_layers(cls, settings: dict) -> int:
        """The text tower's transformer layers in these (merged preset) settings."""
        text = settings["text"]
        if text.get("layers"):
            return int(text["layers"])
        return int((text.get("config") or {}).get(_LAYERS_KEY[text["arch"]], 12))  # Hugging Face's default: 12

    @classmethod
    def text_layer_overrides(cls, settings: dict, layers: int) -> dict:
        """Overrides that build these settings with a text tower of ``layers`` layers of the
        same width: the plan measures a language-model tower too large for one CPU step at
        two depths (1 and 8 layers) and extrapolates in depth."""
        key = _LAYERS_KEY[settings["text"]["arch"]]
        return {"text": {"config": {key: layers}, "layers": None}}

    # --- what a method may override -------------------------------------------------------
    def clamp_parameters(self) -> None:
        """Called by the trainer after every optimizer step (e.g. a logit scale's bounds)."""

    def chance_losses(self, candidates: int) -> dict[str, float]:
        """Each loss term's value for a model that has learned nothing (all logits equal), with
        ``candidates`` samples per contrast; terms without such a level are left out."""
        return {}

    def text_hidden(self, texts: list[str]):
        out, ids, mask = self.text(texts)
        return out.last_hidden_state, mask

    def project_image(self, features_nf: torch.Tensor) -> torch.Tensor:
        return self.image_head(features_nf)

    @abc.abstractmethod
    def project_text(self, hidden_ntd: torch.Tensor, mask_nt: torch.Tensor) -> torch.Tensor:
        """Pool and project text hidden states to the joint space; each method pools its own way."""
