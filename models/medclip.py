"""MedCLIP (Wang et al. 2022): Swin-T (or ResNet-50) + Bio_ClinicalBERT, the text feature
the mean over tokens of hidden layers 1, 2 and the last, linear projections to 512, a
learnable logit scale from 1/0.07 clamped at 100, and the semantic matching loss: soft
targets from label-vector similarity, so images and captions with the same findings are
positives for each other (METHODS.md section 3). batch 100, lr 2e-5, weight decay 1e-4.

Label vector (13): density one-hot (4), BI-RADS one-hot (7), mass present, calcification
present, from the tables (``benchmark.data.labels``).
Deviations: padding tokens are left out of the mean (the official code averages them
in); the soft targets use a sharp softmax of cosine label similarity (temperature 0.01)
instead of a plain softmax of dot products, so that images whose label vectors differ
get no target mass (a plain softmax puts most of it on wrong captions at batch 100).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.registry import register_model
from models.base import DualEncoder
from models.convirt import TINY_TEXT
from models.encoders import masked_mean
from models.gather import gather_rows
from models.losses import SemanticMatchingLoss


@register_model("medclip")
class MedCLIP(DualEncoder):
    batch_needs = ("image", "caption", "label_vector")
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, image=dict(name="resnet_tiny"), text=TINY_TEXT,
                     train=dict(batch_size=64, lr=3e-4, weight_decay=1e-4, warmup_fraction=0.05),
                     augment=dict(crop_scale=(0.6, 1.0))),
        "paper": dict(image_size=224, embed_dim=512, image=dict(name="swin_tiny_patch4_window7_224"),
                      text=dict(arch="bert", context_length=128, config={}),
                      train=dict(batch_size=100, lr=2e-5, weight_decay=1e-4, warmup_fraction=0.05),
                      augment=dict(crop_scale=(0.6, 1.0))),
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

    def training_loss(self, batch: dict) -> dict:
        labels = gather_rows(batch["label_vector"])
        loss = self.loss_fn(gather_rows(self.encode_image(batch["image"])),
                            gather_rows(self.encode_text(batch["caption"])), labels, labels, self.logit_scale)
        return {"loss": loss, "semantic": loss.detach()}
