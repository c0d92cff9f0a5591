"""ConVIRT (Zhang et al. 2020): ResNet-50 + a clinical BERT with its embeddings and first
6 layers frozen, MLP heads to 512, loss 0.75 * L(image->text) + 0.25 * L(text->image) at
temperature 0.1, Adam lr 1e-4, weight decay 1e-6, batch 32; each report is augmented
by sampling one of its sentences (docs/protocol.md, Methods). The text feature is a max
pool over the last hidden states, as in the paper. There is no official training code.
"""

from __future__ import annotations

import math

import torch

from benchmark.registry import register_model
from models.base import DualEncoder
from models.encoders import freeze, mlp
from models.losses import WeightedInfoNCE
from models.text_towers import tower_text

# The tiny BERT the caption-based methods share, pretrained by the workflow with BERT's masked-LM and next-sentence tasks
# (models/text_towers.py); 144 tokens hold a whole report.
TINY_TEXT = tower_text("bert_tiny", 144)


@register_model("convirt")
class ConVIRT(DualEncoder):
    image_text_term = "infonce"  # the term pretraining is judged against chance by
    batch_needs = ("image", "random_sentence")
    presets = {
        "tiny": dict(image_size=96, embed_dim=128, image=dict(name="resnet_tiny"),
                     text=dict(TINY_TEXT, context_length=48), frozen_text_layers=1,  # one sentence
                     train=dict(batch_size=32, lr=1e-3, weight_decay=1e-6, optimizer="adam", warmup_fraction=0.05),  # lr: docs/synthetic-data.md
                     augment=dict(crop_scale=(0.6, 1.0))),
        "paper": dict(image_size=224, embed_dim=512, image=dict(name="resnet50"),
                      text=dict(arch="bert", context_length=128, config={}), frozen_text_layers=6,
                      train=dict(batch_size=32, lr=1e-4, weight_decay=1e-6, optimizer="adam", warmup_fraction=0.0),
                      augment=dict(crop_scale=(0.6, 1.0))),
    }

    def __init__(self, *, frozen_text_layers: int, **kwargs):
        super().__init__(learnable_scale=False, init_logit_scale=math.log(1 / 0.1), **kwargs)
        width = self.text.width
        self.image_head = mlp(self.feature_dim, self.feature_dim, self.embed_dim)
        self.text_head = mlp(width, width, self.embed_dim)
        freeze(self.text.model.embeddings)
        for layer in self.text.model.encoder.layer[:frozen_text_layers]:
            freeze(layer)
        self.loss_fn = WeightedInfoNCE(image_to_text_weight=0.75, temperature=0.1)

    def project_text(self, hidden_ntd, mask_nt):
        pooled = hidden_ntd.masked_fill(~mask_nt.bool()[..., None], float("-inf")).amax(dim=1)
        return self.text_head(pooled)

    def training_loss(self, batch: dict) -> dict:
        loss = self.loss_fn(self.encode_image(batch["image"]), self.encode_text(batch["random_sentence"]))
        return {"loss": loss, "infonce": loss.detach()}

    def chance_losses(self, candidates: int) -> dict[str, float]:
        return {"infonce": self.loss_fn.chance(candidates)}

    @torch.no_grad()
    def trainable_text_layers(self) -> int:
        return sum(any(p.requires_grad for p in layer.parameters()) for layer in self.text.model.encoder.layer)
