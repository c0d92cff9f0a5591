"""MedCLIP (Wang et al. 2022): Swin-T (or ResNet-50) + Bio_ClinicalBERT. Constants from
the official code (RyanWangZf/MedCLIP: ``losses.py``, ``dataset.py``,
``modeling_medclip.py``, ``trainer.py``, ``examples/run_medclip_pretrain.py``); the table
with the paper's and this project's values is in docs/protocol.md.

- Decoupled pairs: the text side of an image is **one** sentence of its report, drawn at
  random, with that sentence's own label vector (``dataset.py``); here the labels come
  from a rule-based labeller on the sentence (``benchmark.data.labels.sentence_label_vector``),
  the image's from the tables. Label vector (13): density one-hot (4), BI-RADS one-hot
  (7), mass present, calcification present.
- Semantic matching loss: soft targets are the row-softmax of the raw label dot products
  (image labels x sentence labels^T), soft cross-entropy both ways, averaged.
- Text feature: the mean over tokens of hidden layers 1, 2 and the last; linear
  projections (no bias) to 512; learnable logit scale from 1/0.07, clamped to [0, 4.6052]
  (ln 100) after every step, as the official ``compute_logits`` clamps it before use.
- AdamW lr 2e-5, weight decay 1e-4 except biases and LayerNorm, 10 % warm-up, cosine,
  gradient norm clipped at 1.0, batch 100. Augmentation: horizontal flip, brightness and
  contrast jitter 0.2, a random affine map (rotation 10 degrees, shift 6.25 %, zoom
  0.8-1.1), a random 224 crop of the 256 image (here the crop comes first, the affine map
  last: the same kinds and ranges of change).
Deviations: padding tokens are left out of the text mean (the official collator pads to
the longest sentence of the batch and averages the padding in, so a sentence's embedding
depends on its batch); the official EDA text augmentation (synonyms from WordNet, swaps,
deletions, its loss averaged with the plain one) is not applied; images are normalised with the backbone's ImageNet statistics, not MedCLIP's
chest X-ray ones.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.registry import register_model
from models.base import DualEncoder
from models.convirt import TINY_TEXT
from models.encoders import masked_mean
from models.losses import SemanticMatchingLoss

MAX_LOGIT_SCALE = 4.6052
# torchvision's RandomAffine applies to every image: p 1
AUGMENT = dict(crop_scale=((224 / 256) ** 2,) * 2, crop_ratio=(1.0, 1.0), hflip=True, vflip=False, jitter=0.2,
               jitter_p=1.0, affine_p=1.0, affine_degrees=10.0, affine_translate=0.0625, affine_scale=(0.8, 1.1))
TRAIN = dict(weight_decay=1e-4, warmup_fraction=0.1, betas=(0.9, 0.999), grad_clip_norm=1.0,
             no_weight_decay=["bias", "LayerNorm.bias", "LayerNorm.weight"])


@register_model("medclip")
class MedCLIP(DualEncoder):
    image_text_term = "semantic"  # the term pretraining is judged against chance by
    batch_needs = ("image", "random_sentence", "label_vector", "sentence_label_vector")
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, image=dict(name="resnet_tiny"),
                     text=dict(TINY_TEXT, context_length=48),  # one sentence
                     train=dict(TRAIN, batch_size=64, lr=1e-3), augment=AUGMENT),  # lr: docs/synthetic-data.md
        "paper": dict(image_size=224, embed_dim=512, image=dict(name="swin_tiny_patch4_window7_224"),
                      text=dict(arch="bert", context_length=77, config={}),
                      train=dict(TRAIN, batch_size=100, lr=2e-5), augment=AUGMENT),
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.image_head = nn.Linear(self.feature_dim, self.embed_dim, bias=False)
        self.text_head = nn.Linear(self.text.width, self.embed_dim, bias=False)
        self.loss_fn = SemanticMatchingLoss()

    def text_hidden(self, texts):
        out, _, mask = self.text(texts)
        layers = out.hidden_states  # embeddings, layer 1, ..., last
        stacked_lntd = torch.stack([layers[1], layers[min(2, len(layers) - 1)], layers[-1]])
        return stacked_lntd.mean(dim=0), mask

    def project_text(self, hidden_ntd, mask_nt):
        return self.text_head(masked_mean(hidden_ntd, mask_nt))

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def training_loss(self, batch: dict) -> dict:
        loss = self.loss_fn(self.encode_image(batch["image"]), self.encode_text(batch["random_sentence"]),
                            batch["label_vector"], batch["sentence_label_vector"], self.logit_scale.exp())
        floor = self.loss_fn.floor(batch["label_vector"], batch["sentence_label_vector"])
        return {"loss": loss, "semantic": loss.detach(), "semantic_floor": floor,
                "logit_scale": self.logit_scale.detach().exp()}

    def chance_losses(self, candidates: int) -> dict[str, float]:
        return {"semantic": self.loss_fn.chance(candidates)}

