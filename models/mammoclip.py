"""Mammo-CLIP (Ghosh et al., MICCAI 2024): EfficientNet-B5 (or B2) + Bio_ClinicalBERT,
linear projections to 512, one learnable temperature (initialised at 0.07, never clamped),
trained on two views of a breast and two texts per sample. Constants from the official
code (the ``mammoclip`` package's ``codebase/``: ``breastclip/loss/breast_clip.py``,
``breastclip/model/clip.py``, ``configs/pre_train_b5_clip.yaml`` and the files it names);
the table is in docs/protocol.md.

- Loss (``MultiViewClipLoss``): image-text contrast over the four pairs of {I1, I2} x {T1,
  T2} + 1.0 x image-image (I1 vs I2) + 0.5 x text-text (T1 vs T2), no label smoothing.
- Multi-view supervision: I2 is the other standard view (CC <-> MLO) of the same breast when
  the exam has it, else a second augmentation of the same image (``paired_view``).
- Dataset-agnostic supervision: the official run adds an image-label dataset whose labels
  are written as templated reports and contrasted like any text. EMBED has no free text:
  every record has a report (the shared caption, built from its tables) and labels, so
  here T1 is the caption every method sees and T2 the record's mass and calcification
  labels as a templated report (``label_report``). The official code's ``classification``
  (BCE) loss is not part of its pretraining configs, and is not used here either.
- Text: the hidden state of the last non-padding token ("eos" pooling: [SEP] for BERT).
- Image: the backbone's globally average-pooled features; timm's ``tf_efficientnet_b5``
  with the official dropout 0.4 before the projection and stochastic depth 0.2 (B2: 0.3).
  The official linear head ignores its configured dropout of 0.1, and so does this one.
  The official backbone (EfficientNet-PyTorch's code, ``tf_efficientnet_b5_ns-detect``)
  pads its strided convolutions as "same" padding would at its ImageNet size (456; B2:
  260) whatever the input; the paper presets do the same (``padding_for``).
- Released checkpoints (``read_external``): the ``.tar`` files the official trainer saves,
  ``{"model": state dict, "config": the run's config, ...}``, read into this model (the
  EfficientNet-PyTorch names renamed to timm's); the tokenizer and text architecture come
  from the Bio_ClinicalBERT folder given as the entry's text ``weights``, as officially.
- AdamW (0.9, 0.999), lr 5e-5, weight decay 1e-4 on every parameter, 1 warm-up epoch of
  15, cosine; batch 4; 1520 x 912 portrait images normalised with mean 0.3089 and std
  0.2505; horizontal and vertical flips, a random affine (rotation 20 degrees, shift 10 %,
  zoom 0.8-1.2, shear 20 degrees) and an elastic deformation (alpha 10, sigma 15 pixels),
  each with albumentations' default probability 0.5.
Deviation: the official text "shuffle" augmentation never takes effect (its loop assigns a
local variable), so sentences are not shuffled here either; report sections and
back-translations, which EMBED does not have, are not drawn.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from benchmark.errors import BenchmarkError
from benchmark.registry import register_model
from models.base import DualEncoder
from models.convirt import TINY_TEXT
from models.encoders import pad_as_for_image_size
from models.losses import MultiViewClipLoss

MEAN, STD = (0.3089279,) * 3, (0.25053555408335154,) * 3
TRAIN = dict(lr=5e-5, weight_decay=1e-4, warmup_fraction=1 / 15, betas=(0.9, 0.999), eps=1e-8,
             no_weight_decay="none")
PAPER_SIZE = [1520, 912]  # height, width


def augment(pixels_per_official_pixel: float = 1.0) -> dict:
    """The official training transform; the elastic field's pixel constants scale with the image."""
    return dict(crop=False, hflip=True, vflip=True, jitter=0.0,
                affine_p=0.5, affine_degrees=20.0, affine_translate=0.1, affine_scale=(0.8, 1.2), affine_shear=20.0,
                elastic_p=0.5, elastic_alpha=10.0 * pixels_per_official_pixel,
                elastic_sigma=15.0 * pixels_per_official_pixel)


def _paper(backbone: str, dropout: float, padding_for: int) -> dict:
    return dict(image_size=PAPER_SIZE, embed_dim=512, padding_for=padding_for,
                image=dict(name=backbone, kwargs=dict(drop_rate=dropout, drop_path_rate=0.2), mean=MEAN, std=STD),
                text=dict(arch="bert", context_length=256, config={}),
                train=dict(TRAIN, batch_size=4), augment=augment())


@register_model("mammoclip")
class MammoCLIP(DualEncoder):
    image_text_term = "image_text"  # the term pretraining is judged against chance by
    batch_needs = ("image", "paired_view", "caption", "label_report")
    presets = {
        # 120 x 72 keeps the 1520 x 912 aspect; a from-scratch backbone needs a higher rate
        "tiny": dict(image_size=[120, 72], embed_dim=128,
                     image=dict(name="efficientnet_tiny", kwargs=dict(drop_rate=0.4, drop_path_rate=0.2),
                                mean=MEAN, std=STD),
                     text=TINY_TEXT, train=dict(TRAIN, batch_size=32, lr=1e-3), augment=augment(120 / 1520)),  # lr: docs/synthetic-data.md
        "paper": _paper("tf_efficientnet_b5", dropout=0.4, padding_for=456),
        "paper_b2": _paper("tf_efficientnet_b2", dropout=0.3, padding_for=260),
    }

    def __init__(self, padding_for: int | None = None, **kwargs):
        """``padding_for``: pad strided convolutions as "same" padding does at this input size
        (the official EfficientNet code's static padding), whatever the input; None: timm's."""
        super().__init__(learnable_scale=True, init_logit_scale=math.log(1 / 0.07), **kwargs)
        if padding_for:
            pad_as_for_image_size(self.visual, padding_for)
        self.image_head = nn.Linear(self.feature_dim, self.embed_dim)
        self.text_head = nn.Linear(self.text.width, self.embed_dim)
        self.loss_fn = MultiViewClipLoss(image_weight=1.0, text_weight=0.5)

    def project_text(self, hidden_ntd: torch.Tensor, mask_nt: torch.Tensor) -> torch.Tensor:
        last_n = mask_nt.sum(dim=1).long() - 1  # the last non-padding token
        return self.text_head(hidden_ntd[torch.arange(len(hidden_ntd), device=hidden_ntd.device), last_n])

    def training_loss(self, batch: dict) -> dict:
        # the two views go through the backbone separately, as officially (batch-norm statistics per view)
        terms = self.loss_fn(self.encode_image(batch["image"]), self.encode_image(batch["paired_view"]),
                             self.encode_text(batch["caption"]), self.encode_text(batch["label_report"]),
                             self.logit_scale.exp())
        return {name: value if name == "loss" else value.detach() for name, value in terms.items()}

    def chance_losses(self, candidates: int) -> dict[str, float]:
        return self.loss_fn.chance(candidates)

    def read_external(self, path) -> dict[str, torch.Tensor]:
        """A released Mammo-CLIP checkpoint (the official trainer's ``.tar``) as this model's
        state dict; one line naming the file where its layout is not the one read here."""
        checkpoint = _torch_load(path)
        if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
            raise BenchmarkError(f"{path}: not a Mammo-CLIP checkpoint (expected a dict with 'model' and 'config', "
                                 "as the official trainer saves)")
        model_config = checkpoint["config"]["model"]
        image_name = str(model_config["image_encoder"]["name"]).lower()
        # the official config's encoder name -> (timm's name, its feature width)
        released = {"tf_efficientnet_b5_ns-detect": ("tf_efficientnet_b5", 2048),
                    "tf_efficientnetv2-detect": ("tf_efficientnet_b2", 1408)}
        if image_name not in released:
            raise BenchmarkError(f"{path}: image encoder {image_name!r}; only the released EfficientNet-B5 and B2 "
                                 f"({', '.join(released)}) are read")
        backbone, width = released[image_name]
        if type(self.visual).__name__ != "EfficientNet" or self.feature_dim != width:
            raise BenchmarkError(f"{path}: a {backbone} checkpoint; use the preset with that backbone "
                                 "(paper: B5, paper_b2: B2)")
        head = model_config.get("projection_head", {}).get("name")
        pooling = model_config["text_encoder"].get("pooling")
        if head != "linear" or pooling != "eos":
            raise BenchmarkError(f"{path}: projection head {head!r} and text pooling {pooling!r}; the released "
                                 "checkpoints (and this model) use a linear head and eos pooling")
        state: dict[str, torch.Tensor] = {}
        image = {k.removeprefix("image_encoder."): v for k, v in checkpoint["model"].items()
                 if k.startswith("image_encoder.")}
        state.update({f"visual.{k}": v for k, v in efficientnet_pytorch_to_timm(image, self.visual).items()})
        for key, value in checkpoint["model"].items():
            if key.startswith("text_encoder.text_encoder."):
                state["text.model." + key.removeprefix("text_encoder.text_encoder.")] = value
            elif key.startswith(("image_projection.projection.", "text_projection.projection.")):
                tower, _, kind = key.split(".")
                state[f"{tower.removesuffix('_projection')}_head.{kind}"] = value
            elif key == "logit_scale":
                state[key] = value.reshape(())
        return state


def _torch_load(path) -> dict:
    """The official trainer pickles its config with the weights; plain types load with
    ``weights_only``; anything else (e.g. an OmegaConf object) needs the full unpickler,
    which runs code from the file: it is used only then, with a warning naming the file."""
    import pickle
    import sys

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        print(f"warning: {path}: loading with the full unpickler (the file holds more than tensors and plain "
              "types); only do this with a file you trust", file=sys.stderr)
        return torch.load(path, map_location="cpu", weights_only=False)


# EfficientNet-PyTorch's block parts -> timm's, without (depthwise-separable) and with an expansion
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
             "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch's state dict (``_blocks.<i>``, numbered across stages) in the key
    names of timm's EfficientNet ``backbone`` (``blocks.<stage>.<j>``); the classifier
    (``_fc``) is dropped, as the backbone has none."""
    timm_blocks = [f"blocks.{s}.{j}" for s, stage in enumerate(backbone.blocks) for j in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module.startswith("_blocks."):
            _, index, part = module.split(".", 2)
            if int(index) >= len(timm_blocks):
                raise BenchmarkError(f"block {index} of the checkpoint: the backbone has {len(timm_blocks)} blocks")
            expands = f"_blocks.{index}._expand_conv.weight" in state
            out[f"{timm_blocks[int(index)]}.{(_IR_BLOCK if expands else _DS_BLOCK)[part]}.{param}"] = value
        elif module in _TOP:
            out[f"{_TOP[module]}.{param}"] = value
        elif module != "_fc":
            raise BenchmarkError(f"image encoder key {key!r} is not one of EfficientNet-PyTorch's")
    return out
